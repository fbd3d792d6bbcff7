"""Board targets, the UART shell, host protocol and driver, build/flash and reports."""
