"""The gRPC API (`reasoning.v1.Reasoning`): its .proto, the generated stubs, and the mapping
between its messages and the service's own objects."""

# What Serve's gRPC options name to serve the API (`grpc_servicer_functions`).
SERVICER_FUNCTION = "cluster.rpc.reasoning_pb2_grpc.add_ReasoningServicer_to_server"
