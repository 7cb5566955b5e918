//! AES-GCM from Intel's IPsec-MB library (Debian `libipsec-mb-dev`), the
//! engine behind DPDK's `crypto_aesni_gcm` driver, called synchronously on the
//! worker's own core. A safe wrapper: keys are expanded once, and every call
//! checks its lengths before it reaches C.

use std::ffi::CStr;

/// One expanded AES-GCM key (round keys and GHASH powers), aligned as the
/// library's `struct gcm_key_data` requires.
#[repr(C, align(64))]
pub struct GcmKey {
    data: [u8; crate::SHIM_IMB_GCM_KEY_BYTES as usize],
    key_len: u32,
}

/// The shim's seal and open, which share one signature.
type GcmOperation = unsafe extern "C" fn(u32, *const std::ffi::c_void, *const u8, *const u8, u64, *mut u8, u64, *mut u8);

/// Why IPsec-MB could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The library could not set itself up for this CPU.
    Unavailable,
    /// The key is neither 16 nor 32 bytes.
    KeyLength,
}

/// Sets the library up for this CPU (once per process; later calls are cheap).
pub fn init() -> Result<(), Error> {
    // SAFETY: shim_imb_init is idempotent and thread-safe (pthread_once).
    if unsafe { crate::shim_imb_init() } == 0 {
        Ok(())
    } else {
        Err(Error::Unavailable)
    }
}

/// The instruction set the library chose for this CPU ("avx512", "avx2", ...).
pub fn arch() -> &'static str {
    let _ = init();
    // SAFETY: returns a pointer to a static NUL-terminated string; init ran
    // (through pthread_once), so the manager it reads is settled.
    unsafe { CStr::from_ptr(crate::shim_imb_arch()) }.to_str().unwrap_or("other")
}

impl Drop for GcmKey {
    /// Wipes the key schedule, so that a deleted SA's key does not linger in freed memory.
    fn drop(&mut self) {
        self.data.fill(0);
        std::hint::black_box(&self.data);
    }
}

impl GcmKey {
    /// Expands an AES-128 or AES-256 key.
    pub fn new(key: &[u8]) -> Result<Box<GcmKey>, Error> {
        init()?;
        if key.len() != 16 && key.len() != 32 {
            return Err(Error::KeyLength);
        }
        let mut expanded =
            Box::new(GcmKey { data: [0; crate::SHIM_IMB_GCM_KEY_BYTES as usize], key_len: key.len() as u32 });
        // SAFETY: the manager is initialised (init above); key holds key_len
        // bytes; data has SHIM_IMB_GCM_KEY_BYTES bytes, 64-byte aligned, which
        // the C side asserts is enough for struct gcm_key_data.
        let rc = unsafe {
            crate::shim_imb_gcm_precompute(expanded.key_len, key.as_ptr(), expanded.data.as_mut_ptr().cast())
        };
        if rc == 0 {
            Ok(expanded)
        } else {
            Err(Error::Unavailable)
        }
    }

    /// Brings what sealing or opening `len` bytes reads into the cache: the
    /// round keys (the first 240 bytes), the key length, and the GHASH key
    /// powers, which the library keeps highest first with H^1 at the end of
    /// the key data (gcm_keys_vaes_avx512.asm): a short packet needs only the
    /// last lines, a long one up to all of them.
    #[inline]
    pub fn prefetch(&self, len: usize) {
        for line in [0, 64, 128, 192] {
            crate::prefetch(&self.data[line]);
        }
        crate::prefetch(&self.key_len);
        // One 16-byte power per block, up to the 48 the table holds.
        let powers_bytes = len.div_ceil(16).clamp(8, 48) * 16;
        let table_end = 240 + 48 * 16;
        for offset in (table_end - powers_bytes..table_end).step_by(64) {
            crate::prefetch(&self.data[offset]);
        }
    }

    /// Encrypts `data` in place and returns the 16-byte tag.
    #[inline]
    pub fn seal(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        self.run(crate::shim_imb_gcm_seal, iv, aad, data)
    }

    /// Decrypts `data` in place and returns the tag it computed; the caller
    /// compares it with the received one in constant time (and must discard
    /// `data` if they differ).
    #[inline]
    pub fn open(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        self.run(crate::shim_imb_gcm_open, iv, aad, data)
    }

    #[inline]
    fn run(&self, operation: GcmOperation, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let mut tag = [0u8; 16];
        // SAFETY: a GcmKey exists only after a successful precompute, so the
        // manager is set; every pointer comes with its exact length, and the
        // library works in place (dst == src is supported).
        unsafe {
            operation(
                self.key_len,
                self.data.as_ptr().cast(),
                iv.as_ptr(),
                aad.as_ptr(),
                aad.len() as u64,
                data.as_mut_ptr(),
                data.len() as u64,
                tag.as_mut_ptr(),
            )
        };
        tag
    }
}
