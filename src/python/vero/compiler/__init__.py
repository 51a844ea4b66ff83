"""The compiler: build.yaml -> a sealed Harbor task directory."""
