"""Generated inputs for the demo and the tests: a WIM, an SDI, a whole FFU."""
