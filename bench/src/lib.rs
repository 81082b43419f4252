//! Benchmarks that run the same guest workloads under each backend
//! (`cargo bench -p bench`). Empty until a software CPU exists to compare
//! with KVM; boot-time figures come from `scripts/measure-boot.sh`.
