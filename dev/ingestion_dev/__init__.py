"""Development and test tooling: a process control plane, a pod runner, a sandbox."""
