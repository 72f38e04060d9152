"""Generated gRPC stubs (from proto/ by `python -m parallax.rpc.generate`) and named deadlines."""
