"""How networks run on the user's device: device detection, precision, the fused CPU runtime,
memory reuse, the latency policy and the benchmark."""
