"""The usbfs memory budget: reading the cap, fair sharing, back-off after a refusal."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from parallel_flash.transport.usbfs import (
    DEFAULT_USBFS_MEMORY_MB,
    SHARED_TRANSFER_FLOOR,
    SIZE_STEP,
    SMALL_TRANSFER_RESERVE,
    SMALLEST_TRANSFER,
    STREAM_DEPTH,
    BudgetClient,
    UsbfsBudget,
    read_usbfs_memory_mb,
)

MiB = 1 << 20


def _client(name: str, woken: list[str] | None = None) -> BudgetClient:
    return BudgetClient(name, lambda: woken.append(name) if woken is not None else None)


# -- reading the cap -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("16\n", 16), ("0\n", 0), ("256", 256)])
def test_read_cap(tmp_path: Path, text: str, expected: int) -> None:
    path = tmp_path / "usbfs_memory_mb"
    path.write_text(text)
    assert read_usbfs_memory_mb(path) == expected


def test_missing_cap_file_assumes_kernel_default(tmp_path: Path) -> None:
    assert read_usbfs_memory_mb(tmp_path / "absent") == DEFAULT_USBFS_MEMORY_MB


def test_garbage_cap_file_warns_and_assumes_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usbfs_memory_mb"
    path.write_text("lots\n")
    with caplog.at_level(logging.WARNING):
        assert read_usbfs_memory_mb(path) == DEFAULT_USBFS_MEMORY_MB
    assert "not a number" in caplog.text and str(path) in caplog.text


def test_from_sysfs_reads_megabytes(tmp_path: Path) -> None:
    path = tmp_path / "usbfs_memory_mb"
    path.write_text("16\n")
    budget = UsbfsBudget.from_sysfs(path)
    assert budget.limit_bytes == 16 * MiB
    assert budget.usable == 16 * MiB - SMALL_TRANSFER_RESERVE
    assert UsbfsBudget(0).capped is False
    with pytest.raises(ValueError, match="must be >= 0"):
        UsbfsBudget(-1)


# -- granting --------------------------------------------------------------------------


def test_no_cap_grants_everything() -> None:
    budget = UsbfsBudget(0)
    client = _client("1-1")
    budget.register(client)
    assert all(budget.try_acquire(client, MiB) for _ in range(100))
    assert client.held == 100 and budget.reserved == 0


def test_eight_devices_share_sixteen_megabytes() -> None:
    budget = UsbfsBudget(16 * MiB)
    clients = [_client(f"1-{i}") for i in range(1, 9)]
    for client in clients:
        budget.register(client)
    # Everyone gets a first transfer before anyone gets a second.
    assert all(budget.try_acquire(client, MiB) for client in clients)
    for _ in range(4):
        for client in clients:
            budget.try_acquire(client, MiB)
    assert budget.reserved <= budget.ceiling
    held = [client.held for client in clients]
    assert min(held) >= 1
    assert max(held) <= budget.fair_share(MiB) == 2
    assert sum(held) == budget.usable // UsbfsBudget.cost(MiB)


def test_starved_devices_are_served_first_come_first_served() -> None:
    woken: list[str] = []
    budget = UsbfsBudget(SMALL_TRANSFER_RESERVE + 2 * UsbfsBudget.cost(MiB))
    a, b, c, d = (_client(name, woken) for name in "abcd")
    for client in (a, b, c, d):
        budget.register(client)
    assert budget.try_acquire(a, MiB) and budget.try_acquire(b, MiB)
    assert not budget.try_acquire(c, MiB)
    assert not budget.try_acquire(d, MiB)
    # a may not take a second transfer while c and d have none.
    assert not budget.try_acquire(a, MiB)
    budget.release(a, MiB)
    assert woken == ["c"]
    # d is behind c: refused even though bytes are free.
    assert not budget.try_acquire(d, MiB)
    assert budget.try_acquire(c, MiB)
    # a now holds nothing and queues behind d.
    assert not budget.try_acquire(a, MiB)
    budget.release(b, MiB)
    assert woken[-1] == "d"
    assert budget.try_acquire(d, MiB)


def test_a_transfer_larger_than_the_cap_still_goes_when_nothing_else_is_in_flight() -> None:
    budget = UsbfsBudget(2 * MiB)
    client = _client("1-1")
    budget.register(client)
    assert budget.try_acquire(client, 8 * MiB)
    assert not budget.try_acquire(client, 8 * MiB)


def test_unregister_hands_the_queue_on() -> None:
    woken: list[str] = []
    budget = UsbfsBudget(SMALL_TRANSFER_RESERVE + UsbfsBudget.cost(MiB))
    a, b, c = (_client(name, woken) for name in "abc")
    for client in (a, b, c):
        budget.register(client)
    assert budget.try_acquire(a, MiB)
    assert not budget.try_acquire(b, MiB)
    assert not budget.try_acquire(c, MiB)
    budget.unregister(b)
    assert woken == ["c"]


def test_releasing_more_than_held_is_a_bug() -> None:
    budget = UsbfsBudget(16 * MiB)
    client = _client("1-1")
    with pytest.raises(RuntimeError, match="1-1: released more"):
        budget.release(client, MiB)


# -- the kernel says no ------------------------------------------------------------------


def test_refusal_shrinks_the_ceiling_warns_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = UsbfsBudget(16 * MiB)
    clients = [_client(f"1-{i}") for i in range(1, 5)]
    for client in clients:
        budget.register(client)
    for client in clients:
        assert budget.try_acquire(client, MiB)
    with caplog.at_level(logging.WARNING):
        assert budget.try_acquire(clients[0], MiB)
        budget.refused(clients[0], MiB)  # the kernel disagreed: 4 transfers is all we get
        assert budget.try_acquire(clients[1], MiB) is False
        budget.refused(clients[1], MiB)  # a second refusal: still one warning
    assert budget.ceiling == 3 * UsbfsBudget.cost(MiB)
    assert budget.refusals == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "usbfs_memory_mb" in warnings[0].getMessage()
    assert "usbcore.usbfs_memory_mb=" in warnings[0].getMessage()
    # Successful completions let the ceiling grow back towards the cap.
    for round_ in range(200):
        holder = clients[round_ % 4]
        if holder.held:
            budget.release(holder, MiB)
        for client in clients:
            budget.try_acquire(client, MiB)
    assert budget.ceiling > 3 * UsbfsBudget.cost(MiB)
    assert budget.reserved > 3 * UsbfsBudget.cost(MiB)


def test_refused_client_holding_nothing_queues_behind_others() -> None:
    woken: list[str] = []
    budget = UsbfsBudget(16 * MiB)
    a, b = _client("a", woken), _client("b", woken)
    budget.register(a)
    budget.register(b)
    assert budget.try_acquire(a, MiB)
    assert budget.try_acquire(b, MiB)
    budget.refused(b, MiB)
    assert b.held == 0
    budget.release(a, MiB)
    assert woken == ["b"]


# -- a line's worth of streams -------------------------------------------------------------


@pytest.mark.parametrize(("devices", "cap_mb"), [(32, 16), (8, 16), (3, 4), (12, 0)])
def test_every_stream_finishes_within_the_cap(devices: int, cap_mb: int) -> None:
    """Streams of 20 transfers, 4 in flight each, completions in random order."""
    rng = random.Random(devices * 100 + cap_mb)
    budget = UsbfsBudget(cap_mb * MiB)
    woken: set[str] = set()
    clients = [
        BudgetClient(f"1-{i}", lambda name=f"1-{i}": woken.add(name)) for i in range(devices)
    ]
    remaining = {client.name: 20 for client in clients}
    in_flight: list[BudgetClient] = []
    waits = {client.name: 0 for client in clients}
    for client in clients:
        budget.register(client)
    for _ in range(100_000):
        for client in clients:
            while (
                remaining[client.name] > client.held
                and client.held < 4
                and budget.try_acquire(client, MiB)
            ):
                in_flight.append(client)
            wanting = remaining[client.name] > 0
            waits[client.name] = waits[client.name] + 1 if wanting and not client.held else 0
        if budget.capped:
            assert budget.reserved <= budget.ceiling
        if not in_flight:
            break
        done = in_flight.pop(rng.randrange(len(in_flight)))
        budget.release(done, MiB)
        remaining[done.name] -= 1
        if remaining[done.name] == 0:
            budget.unregister(done)
        assert max(waits.values()) < 5 * devices  # nobody starves
    assert not any(remaining.values())
    assert budget.reserved == 0


def test_extra_slots_rotate_so_every_device_gets_the_same_rate() -> None:
    """15 slots for 8 devices: freed bytes go to whoever holds fewest, so over time
    each device completes about as many transfers as the others."""
    budget = UsbfsBudget(16 * MiB)
    clients = [BudgetClient(f"1-{i}", lambda: None) for i in range(8)]
    for client in clients:
        budget.register(client)
    queue: list[BudgetClient] = []  # in flight, completing in submission order (one bus)
    done = {client.name: 0 for client in clients}
    for _ in range(2000):
        for client in clients:
            while client.held < 4 and budget.try_acquire(client, MiB):
                queue.append(client)
        finished = queue.pop(0)
        budget.release(finished, MiB)
        done[finished.name] += 1
    counts = sorted(done.values())
    assert counts[-1] - counts[0] <= 0.05 * counts[0], done


# -- smaller transfers, and resubmitting without asking (issues 7 and 10) --------------------


def test_transfer_size_shrinks_only_when_the_cap_is_too_small() -> None:
    assert UsbfsBudget(0).transfer_size_limit(MiB, 64) == MiB  # no cap: as wanted
    sixteen = UsbfsBudget(16 * MiB)
    assert sixteen.transfer_size_limit(MiB, 4) == MiB  # 4 x 2 x 1 MiB fit in 15.5 MiB
    for devices, size in ((8, 976 << 10), (16, 480 << 10)):  # the largest that fit 2 each
        assert sixteen.transfer_size_limit(MiB, devices) == size
        assert devices * STREAM_DEPTH * UsbfsBudget.cost(size) <= sixteen.usable
        assert devices * STREAM_DEPTH * UsbfsBudget.cost(size + SIZE_STEP) > sixteen.usable
        assert size % SIZE_STEP == 0
    assert sixteen.transfer_size_limit(MiB, 1000) == SHARED_TRANSFER_FLOOR
    tiny = UsbfsBudget(MiB)  # one 1 MiB transfer never fits under a 1 MB cap
    size = tiny.transfer_size_limit(MiB, 1)
    assert size == 368 << 10 and STREAM_DEPTH * UsbfsBudget.cost(size) <= tiny.usable
    assert tiny.transfer_size_limit(16376, 1) == 16376  # the legacy size is left alone
    assert UsbfsBudget(20 << 10).transfer_size_limit(MiB, 1) == SMALLEST_TRANSFER


def test_may_keep_until_someone_else_waits_or_the_share_shrinks() -> None:
    budget = UsbfsBudget(SMALL_TRANSFER_RESERVE + 2 * UsbfsBudget.cost(MiB))
    first, second = _client("a"), _client("b")
    budget.register(first)
    assert budget.try_acquire(first, MiB) and budget.try_acquire(first, MiB)
    assert budget.may_keep(first, MiB)  # alone: keeps both
    budget.register(second)
    assert not budget.may_keep(first, MiB)  # over its share of one now
    budget.release(first, MiB)
    assert budget.may_keep(first, MiB)  # holds its share of one
    assert budget.try_acquire(second, MiB)
    third = _client("c")
    budget.register(third)
    assert not budget.try_acquire(third, MiB)  # full: third waits in line ...
    assert not budget.may_keep(first, MiB)  # ... so the others hand bytes back
    assert not budget.may_keep(second, MiB)
    assert UsbfsBudget(0).may_keep(first, MiB)


def test_may_keep_the_slots_everyone_can_have_while_the_extra_ones_rotate() -> None:
    budget = UsbfsBudget(SMALL_TRANSFER_RESERVE + 3 * UsbfsBudget.cost(MiB))
    first, second = _client("a"), _client("b")
    budget.register(first)
    budget.register(second)
    assert budget.base_share(MiB) == 1 and budget.fair_share(MiB) == 2
    assert budget.try_acquire(first, MiB) and budget.try_acquire(first, MiB)
    assert budget.try_acquire(second, MiB)
    assert not budget.try_acquire(second, MiB)  # full: second waits for a second slot
    assert not budget.may_keep(first, MiB)  # first's extra slot goes round ...
    budget.release(first, MiB)
    assert budget.may_keep(first, MiB)  # ... its one slot every client can have it keeps
