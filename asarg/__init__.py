"""ASaRG command-line entry point (`asarg ...`). The model classes live in `modeling_asarg`."""
