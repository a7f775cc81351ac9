# Type stubs for the part of PyGObject (``gi``) that the umockdev emulator uses.
#
# PyGObject builds its modules from GObject introspection data at run time, so
# nothing is typed; Debian's python3-gi runs the emulator host. Only what the
# emulator calls is declared here.

def require_version(namespace: str, version: str) -> None: ...
