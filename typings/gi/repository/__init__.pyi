from . import GLib as GLib
from . import UMockdev as UMockdev
