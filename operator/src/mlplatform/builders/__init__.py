"""Pure functions that build the Kubernetes objects the operator creates: spec in, manifest out."""
