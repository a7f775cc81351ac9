"""Each loader generation's protocol, sans-IO: messages, a host state machine, a device model.

SimpleIO's WIM boot lives here: :mod:`.messages` (byte-exact, construct),
:mod:`.host` (:class:`~.host.WimBootHost`), :mod:`.device` (the device model
the simulated line and the emulator run); the Lumia and UFP loaders in
:mod:`.nokia`. :mod:`.actions` and :mod:`.loader` are the engine's seam,
:mod:`.selection` tells a device's loader by its USB IDs, :mod:`.models`
builds a device model of any kind.

Nothing is imported here: importing any module of the package runs this file
first, and a host (the engine on the boot path) never needs a device model
(issue 10: command to first image byte). The public names are
:mod:`parallel_flash`'s.
"""
