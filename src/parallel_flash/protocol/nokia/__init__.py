"""The NOK flash-app loaders, sans-IO: Lumia MMOS over USB and UFP FFU-to-RAM.

Both speak big-endian "NOK*" messages, one request and one reply at a time
(loaders.md A.1, A.2). :mod:`.messages` holds what they share (NOKV, NOKXFR,
status replies), :mod:`.xfl` and :mod:`.xfs` each loader's image messages,
:mod:`.lumia` and :mod:`.ufp` the host machines, and :mod:`.lumia_device`,
:mod:`.ufp_device` the device models the simulated line and the emulator host.

Derived from public host code (WPinternals, UnifiedFlashingPlatform); not
tried on hardware.

Nothing is imported here, as in :mod:`parallel_flash.protocol`: a SimpleIO
line never loads the NOK hosts or device models.
"""
