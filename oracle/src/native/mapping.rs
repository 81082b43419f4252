//! Anonymous mappings at fixed addresses, unmapped on drop.

use std::io;

use crate::OracleError;

/// One anonymous private mapping at a fixed address.
#[derive(Debug)]
pub(crate) struct FixedMapping {
    address: u64,
    size: usize,
}

impl FixedMapping {
    /// Maps `size` bytes of zeroed read-write memory at exactly `address`,
    /// failing (rather than replacing anything) if the range is in use.
    pub(crate) fn new(address: u64, size: usize) -> Result<Self, OracleError> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so
        // this cannot invalidate memory the process already uses; the
        // result is checked below.
        let mapped = unsafe {
            libc::mmap(address as *mut libc::c_void, size, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
        };
        if mapped == libc::MAP_FAILED {
            return Err(OracleError::Map { address, source: io::Error::last_os_error() });
        }
        if mapped as u64 != address {
            // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and treat the
            // address as a hint; give back whatever they chose.
            // SAFETY: `mapped` is the mapping just created, used by no one.
            unsafe { libc::munmap(mapped, size) };
            return Err(OracleError::AddressInUse { address });
        }
        Ok(Self { address, size })
    }

    /// Changes the mapping's protection to `prot` (`PROT_*` bits).
    pub(crate) fn protect(&self, prot: libc::c_int) -> Result<(), OracleError> {
        // SAFETY: the range is exactly this mapping, which we own.
        let rc = unsafe { libc::mprotect(self.address as *mut libc::c_void, self.size, prot) };
        if rc != 0 {
            return Err(OracleError::Protect(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Copies `bytes` to `offset` within the mapping; the caller has made
    /// the mapping writable.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) {
        let end = offset.saturating_add(bytes.len());
        assert!(end <= self.size, "write past the end of a fixed mapping");
        // SAFETY: the destination range lies inside this live, writable
        // mapping (checked above) and cannot overlap `bytes`, which Rust
        // owns elsewhere.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.address as *mut u8).add(offset), bytes.len()) };
    }

    /// Fills `len` bytes at `offset` with zeroes.
    pub(crate) fn zero(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len);
        assert!(end <= self.size, "write past the end of a fixed mapping");
        // SAFETY: as in `write`.
        unsafe { std::ptr::write_bytes((self.address as *mut u8).add(offset), 0, len) };
    }

    /// Copies the whole mapping out.
    pub(crate) fn read_all(&self) -> Vec<u8> {
        let mut out = vec![0; self.size];
        // SAFETY: the mapping is live and readable for `size` bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.address as *const u8, out.as_mut_ptr(), self.size) };
        out
    }
}

impl Drop for FixedMapping {
    fn drop(&mut self) {
        // SAFETY: this mapping was created by `new` and nothing refers to
        // it once its owner (the runner) is gone.
        unsafe { libc::munmap(self.address as *mut libc::c_void, self.size) };
    }
}
