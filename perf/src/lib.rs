//! Sekisho's generator and benchmarks. `sekisho-gen` drives the gateway over
//! virtio links; `sekisho-bench-forward` compares its forwarding rate with a
//! plain DPDK forwarder (testpmd) on the same links in the same run.

pub mod bench;
pub mod clinics;
pub mod gen;
pub mod plot;
pub mod topology;
