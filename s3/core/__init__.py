"""The pure decision core: values in, values out; no I/O, clock or randomness."""
