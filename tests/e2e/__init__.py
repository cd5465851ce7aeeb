"""End-to-end tests: real subprocesses, a real OTLP/gRPC receiver and real servers, on loopback."""
