//! A shared mapping of a file, viewed as atomic 64-bit words: the other
//! process may write it at any time, so every access is atomic (plain
//! reads of concurrently written memory would be a data race).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A shared mapping of a file, viewed as atomic words.
pub(crate) struct Mapping {
    ptr: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn new(file: &File, words: usize, writable: bool) -> io::Result<Mapping> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of `words * 8` bytes of an open file
        // that is at least that long (callers check); no existing memory is affected.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), words * 8, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: NonNull::new(ptr as *mut AtomicU64).expect("mmap returned null"), words })
    }

    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, `words` u64s long, lives as
        // long as self, and AtomicU64 has the layout of u64. Other processes
        // write it only through atomics too.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no reference outlives self.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.words * 8) };
    }
}
