"""The trusted eval sidecar (`vero harbor serve`) and its clients."""
