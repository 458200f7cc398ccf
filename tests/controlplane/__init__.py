"""A real Kubernetes control plane for tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK's fake nodes, built from
their Go modules (test infrastructure; see docs/testing.md)."""
