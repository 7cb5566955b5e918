//! `dpdk-sys`: raw bindings to the system DPDK (22.11), generated at build time.
//!
//! This crate is all `unsafe` FFI and nothing else. The only safe layer on top
//! is the dataplane's `port::dpdk` module; nothing else in Sekisho calls DPDK.
//! Functions named `shim_*` come from `shim.c` and forward to DPDK's
//! `static inline` fast-path functions (burst I/O, mbuf alloc/free, lcore id).
//! [`ipsec_mb`] is the one safe wrapper here: AES-GCM from Intel IPsec-MB.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all, unsafe_code, unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

pub mod ipsec_mb;

/// [`prefetch`] for every cache line `value` spans.
#[inline(always)]
pub fn prefetch_all<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    for offset in (0..std::mem::size_of::<T>()).step_by(64) {
        // wrapping_add: the address is only a hint and is never dereferenced.
        prefetch_address(start.wrapping_add(offset));
    }
}

/// Asks the CPU to bring the cache line holding `value` into all cache
/// levels (DPDK's `rte_prefetch0`), so that a later access does not wait.
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    prefetch_address((value as *const T).cast::<u8>());
}

#[inline(always)]
fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>())
    };
}
