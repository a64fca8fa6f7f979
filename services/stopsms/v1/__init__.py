"""Generated protobuf and gRPC code of the stopsms.v1 contract. Do not edit."""
