"""Self-tests of the OsteoBMD module that run inside the Slicer application."""
