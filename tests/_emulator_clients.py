"""Client scripts for tests/test_emulator*.py, run under umockdev's preload.

pytest itself does not run under the preload, so each test starts one of
these with ``EmulatedLine.run``/``popen`` (``python -c SCRIPT args...``). They
use python-libusb1 directly -- no parallel-flash code -- so the emulator is
tested against libusb alone. Each prints one JSON object on its last line.
"""

from __future__ import annotations

#: Every flashing-mode device: port path, IDs, speed, endpoints, strings.
ENUMERATE = r"""
import json, usb1
found = []
with usb1.USBContext() as ctx:
    for dev in ctx.getDeviceList(skip_on_error=True):
        if (dev.getVendorID(), dev.getProductID()) != (0x045E, 0x062A):
            continue
        interfaces = []
        for config in dev.iterConfigurations():
            for interface in config:
                for setting in interface:
                    interfaces.append({
                        "number": setting.getNumber(),
                        "alternate": setting.getAlternateSetting(),
                        "endpoints": [
                            [ep.getAddress(), ep.getAttributes() & 3, ep.getMaxPacketSize()]
                            for ep in setting
                        ],
                    })
        handle = dev.open()
        strings = [handle.getManufacturer(), handle.getProduct(), handle.getSerialNumber()]
        handle.close()
        found.append({
            "bus": dev.getBusNumber(),
            "ports": dev.getPortNumberList(),
            "port": f"{dev.getBusNumber()}-" + ".".join(map(str, dev.getPortNumberList())),
            "speed": dev.getDeviceSpeed(),
            "interfaces": interfaces,
            "strings": strings,
        })
print(json.dumps(found))
"""

#: The protocol.md sequence against the device at argv[3], sending SDI
#: argv[1] and WIM argv[2]. argv[4] "sync": blocking writes and explicit
#: zero-length writes; "async": one async transfer at a time with
#: LIBUSB_TRANSFER_ADD_ZERO_PACKET.
PROTOCOL = r"""
import json, struct, sys, usb1
sdi = open(sys.argv[1], "rb").read()
wim = open(sys.argv[2], "rb").read()
port, mode = sys.argv[3], sys.argv[4]
SIZE = 1 << 20
result = {"error": None, "stage": None}
with usb1.USBContext() as ctx:
    dev = next(d for d in ctx.getDeviceList(skip_on_error=True)
               if f"{d.getBusNumber()}-" + ".".join(map(str, d.getPortNumberList())) == port)
    handle = dev.open()
    transfer = handle.getTransfer(add_zero_packet=True)
    done = []

    def write(data, timeout=1000):
        if mode == "sync" or not data:
            handle.bulkWrite(0x01, data, timeout)
            if mode == "sync" and data and len(data) % 512 == 0:
                handle.bulkWrite(0x01, b"", timeout)
            return
        transfer.setBulk(0x01, bytearray(data), lambda t: done.append(t.getStatus()), None, timeout)
        transfer.submit()
        while not done:
            ctx.handleEventsTimeout(1)
        status = done.pop()
        if status != usb1.TRANSFER_COMPLETED:
            raise usb1.USBError(f"transfer status {status}")

    try:
        result["stage"] = "control"
        handle.claimInterface(0)
        handle.controlWrite(0x21, 0x22, 1, 0, b"", 1000)
        result["stage"] = "id"
        write(b"\x01")
        reply = bytes(handle.bulkRead(0x81, 16376, 2000))
        name_length = reply[40]
        result["id"] = {
            "cur_position": struct.unpack_from("<q", reply)[0],
            "unique_id": reply[24:40].hex(),
            "name": reply[41:41 + name_length].decode(),
        }
        result["stage"] = "header"
        write(b"\x10")
        write(struct.pack("<III", len(sdi), len(wim), SIZE))
        result["stage"] = "data"
        for blob in (sdi, wim):
            for offset in range(0, len(blob), SIZE):
                write(blob[offset:offset + SIZE])
        result["stage"] = "status"
        result["status"] = struct.unpack("<i", bytes(handle.bulkRead(0x81, 16376, 15000))[:4])[0]
        handle.releaseInterface(0)
        result["stage"] = "done"
    except usb1.USBError as exc:
        result["error"] = type(exc).__name__
    handle.close()
print(json.dumps(result))
"""

#: Get the device at argv[1] into the data phase, then write one 1 MiB
#: transfer with a 300 ms timeout: a NAKing device must time it out.
NAK = r"""
import json, struct, sys, usb1
port = sys.argv[1]
result = {}
with usb1.USBContext() as ctx:
    dev = next(d for d in ctx.getDeviceList(skip_on_error=True)
               if f"{d.getBusNumber()}-" + ".".join(map(str, d.getPortNumberList())) == port)
    handle = dev.open()
    handle.claimInterface(0)
    handle.bulkWrite(0x01, b"\x10", 1000)
    handle.bulkWrite(0x01, struct.pack("<III", 1 << 20, 1 << 20, 1 << 20), 1000)
    try:
        handle.bulkWrite(0x01, bytes(1 << 20), 300)
        result["write"] = "completed"
    except usb1.USBErrorTimeout:
        result["write"] = "timeout"
    # The endpoint still works for control transfers afterwards.
    result["manufacturer"] = handle.getManufacturer()
    handle.releaseInterface(0)
    handle.close()
print(json.dumps(result))
"""

#: Wait on a bulk IN read at argv[1] that never completes; the test unplugs
#: the device meanwhile. Reports the read's error and the hotplug LEFT event.
UNPLUG = r"""
import json, sys, time, usb1
port = sys.argv[1]
events = []
result = {}
with usb1.USBContext() as ctx:
    def on_hotplug(context, device, event):
        events.append([event, device.getBusNumber(), device.getPortNumberList()])
        return False
    ctx.hotplugRegisterCallback(on_hotplug, events=usb1.HOTPLUG_EVENT_DEVICE_LEFT, flags=0)
    dev = next(d for d in ctx.getDeviceList(skip_on_error=True)
               if f"{d.getBusNumber()}-" + ".".join(map(str, d.getPortNumberList())) == port)
    handle = dev.open()
    handle.claimInterface(0)
    print("waiting", flush=True)
    try:
        handle.bulkRead(0x81, 16376, 20000)
        result["read"] = "completed"
    except usb1.USBError as exc:
        result["read"] = type(exc).__name__
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        ctx.handleEventsTimeout(0.1)
    try:
        handle.bulkWrite(0x01, b"\x01", 1000)
        result["write_after"] = "completed"
    except usb1.USBError as exc:
        result["write_after"] = type(exc).__name__
    handle.close()
result["events"] = events
print(json.dumps(result))
"""

#: Wait for a hotplug ARRIVED event (no initial enumeration) and report it.
ARRIVE = r"""
import json, time, usb1
events = []
with usb1.USBContext() as ctx:
    def on_hotplug(context, device, event):
        events.append({
            "event": event,
            "vid": device.getVendorID(),
            "pid": device.getProductID(),
            "port": f"{device.getBusNumber()}-" + ".".join(map(str, device.getPortNumberList())),
        })
        return False
    ctx.hotplugRegisterCallback(on_hotplug, events=usb1.HOTPLUG_EVENT_DEVICE_ARRIVED, flags=0)
    print("waiting", flush=True)
    deadline = time.monotonic() + 15
    while not any(e["vid"] == 0x045E for e in events) and time.monotonic() < deadline:
        ctx.handleEventsTimeout(0.1)
print(json.dumps(events))
"""

#: Under a 1 MiB usbfs cap, submit 256 KiB IN transfers (which stay pending)
#: alternately on the (first two) devices until one is refused; then cancel
#: them all and submit again.
USBFS_CAP = r"""
import json, usb1
SIZE = 256 * 1024
result = {"cap_file": open("/sys/module/usbcore/parameters/usbfs_memory_mb").read().strip()}
with usb1.USBContext() as ctx:
    handles = [d.open() for d in ctx.getDeviceList(skip_on_error=True)
               if (d.getVendorID(), d.getProductID()) == (0x045E, 0x062A)][:2]
    for handle in handles:
        handle.claimInterface(0)
    cancelled = []

    def submit_until_refused(limit=8):
        transfers, error = [], None
        for i in range(limit):
            transfer = handles[i % len(handles)].getTransfer()
            transfer.setBulk(0x81, SIZE, lambda t: cancelled.append(t.getStatus()), None, 0)
            try:
                transfer.submit()
            except usb1.USBError as exc:
                error = type(exc).__name__
                break
            transfers.append(transfer)
        return transfers, error

    first, result["first_error"] = submit_until_refused()
    result["first_accepted"] = len(first)
    for transfer in first:
        transfer.cancel()
    while len(cancelled) < len(first):
        ctx.handleEventsTimeout(0.1)
    result["cancelled_status"] = sorted(set(cancelled))
    second, result["second_error"] = submit_until_refused()
    result["second_accepted"] = len(second)
    cancelled.clear()
    for transfer in second:
        transfer.cancel()
    while len(cancelled) < len(second):
        ctx.handleEventsTimeout(0.1)
    for handle in handles:
        handle.releaseInterface(0)
        handle.close()
print(json.dumps(result))
"""

#: Leave three 256 KiB IN transfers pending, then die without cleaning up.
DIE_WITH_PENDING = r"""
import os, usb1
ctx = usb1.USBContext()
handle = [d for d in ctx.getDeviceList(skip_on_error=True) if d.getVendorID() == 0x045E][0].open()
handle.claimInterface(0)
transfers = []
for _ in range(3):
    transfer = handle.getTransfer()
    transfer.setBulk(0x81, 256 * 1024, None, None, 0)
    transfer.submit()
    transfers.append(transfer)
print("submitted", flush=True)
os.kill(os.getpid(), 9)
"""
