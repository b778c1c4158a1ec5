//! [`LargeBlockCache`]: a global allocator that hands freed large blocks out again.
//!
//! Slab-wise inference on full-size volumes (the autoencoder at 160×224×160) allocates the
//! same few 16–60 MB temporaries for every depth slab of every layer. The system allocator
//! serves blocks that large with fresh `mmap`s (glibc always does above 32 MiB), so each one
//! is faulted in and zeroed by the kernel page by page: about a fifth of the encoder's time.
//! Keeping the freed blocks for the next request of the same size removes that work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks of at least this many bytes are kept when freed; smaller ones go straight to the
/// system allocator.
pub const LARGE_BLOCK_BYTES: usize = 16 << 20;

/// How many freed blocks are kept at most.
const SLOTS: usize = 32;

/// A kept block: its layout and address (null: the slot is free).
#[derive(Clone, Copy)]
struct Kept {
    size: usize,
    align: usize,
    ptr: *mut u8,
}

const EMPTY: Kept = Kept {
    size: 0,
    align: 0,
    ptr: ptr::null_mut(),
};

/// A global allocator over [`System`] that keeps freed blocks of at least
/// [`LARGE_BLOCK_BYTES`] and returns them for the next request of exactly the same size and
/// alignment, so they are not unmapped, mapped, faulted in and zeroed again.
///
/// A request for a large block that no kept block fits releases every kept block first, so
/// no freed block is held across a request for a block of another size: a program's peak
/// memory does not grow by more than the blocks it had just freed. The brain-ldm tool and the
/// full-size examples use it; install it in your own binary with
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: brain_ldm_nn::LargeBlockCache = brain_ldm_nn::LargeBlockCache::new();
/// # fn main() {}
/// ```
///
/// (measured effect: docs/benchmarks.md, "Autoencoder").
pub struct LargeBlockCache {
    lock: AtomicBool,
    kept: UnsafeCell<[Kept; SLOTS]>,
}

// SAFETY: `kept` is only accessed while `lock` is held (`with_kept`).
unsafe impl Sync for LargeBlockCache {}

impl Default for LargeBlockCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LargeBlockCache {
    /// An allocator holding no blocks.
    pub const fn new() -> Self {
        Self {
            lock: AtomicBool::new(false),
            kept: UnsafeCell::new([EMPTY; SLOTS]),
        }
    }

    /// Runs `f` on the kept blocks under the lock (a spin lock: it must not allocate).
    fn with_kept<R>(&self, f: impl FnOnce(&mut [Kept; SLOTS]) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        // SAFETY: the lock is held, so this is the only reference to `kept`.
        let result = f(unsafe { &mut *self.kept.get() });
        self.lock.store(false, Ordering::Release);
        result
    }

    /// A kept block of exactly `layout`, if there is one. Otherwise every kept block is
    /// released and `None` returned.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let mut released = [EMPTY; SLOTS];
        let hit = self.with_kept(|kept| {
            if let Some(k) = kept
                .iter_mut()
                .find(|k| !k.ptr.is_null() && k.size == layout.size() && k.align == layout.align())
            {
                return Some(std::mem::replace(k, EMPTY).ptr);
            }
            released = std::mem::replace(kept, [EMPTY; SLOTS]);
            None
        });
        for k in released.iter().filter(|k| !k.ptr.is_null()) {
            // SAFETY: the block was allocated by `System` with this layout and is no longer
            // referenced (it was freed by its owner and removed from `kept` above).
            unsafe { System.dealloc(k.ptr, Layout::from_size_align_unchecked(k.size, k.align)) };
        }
        hit
    }

    /// Number of blocks kept now.
    pub fn kept_blocks(&self) -> usize {
        self.with_kept(|kept| kept.iter().filter(|k| !k.ptr.is_null()).count())
    }
}

// SAFETY: every block handed out comes from `System` with the requested layout (kept blocks
// are matched on exact size and alignment), and a block is either in use or kept, never both.
unsafe impl GlobalAlloc for LargeBlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LARGE_BLOCK_BYTES {
            return System.alloc(layout);
        }
        match self.take(layout) {
            Some(block) => block,
            None => System.alloc(layout),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LARGE_BLOCK_BYTES {
            return System.alloc_zeroed(layout);
        }
        match self.take(layout) {
            Some(block) => {
                ptr::write_bytes(block, 0, layout.size());
                block
            }
            // Fresh pages from the system are zero already.
            None => System.alloc_zeroed(layout),
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if layout.size() < LARGE_BLOCK_BYTES {
            return System.dealloc(block, layout);
        }
        let kept = self.with_kept(|kept| match kept.iter_mut().find(|k| k.ptr.is_null()) {
            Some(slot) => {
                *slot = Kept {
                    size: layout.size(),
                    align: layout.align(),
                    ptr: block,
                };
                true
            }
            None => false,
        });
        if !kept {
            System.dealloc(block, layout);
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < LARGE_BLOCK_BYTES && new_size < LARGE_BLOCK_BYTES {
            return System.realloc(block, layout, new_size);
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let moved = self.alloc(new_layout);
        if !moved.is_null() {
            ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
            self.dealloc(block, layout);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = LARGE_BLOCK_BYTES + 4096;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).unwrap()
    }

    #[test]
    fn a_freed_large_block_is_reused_for_the_same_size_and_released_for_another() {
        let cache = LargeBlockCache::new();
        unsafe {
            let a = cache.alloc(layout(BIG));
            a.write(7);
            cache.dealloc(a, layout(BIG));
            assert_eq!(cache.kept_blocks(), 1);
            let b = cache.alloc(layout(BIG));
            assert_eq!(a, b, "the kept block is handed out again");
            assert_eq!(cache.kept_blocks(), 0);
            cache.dealloc(b, layout(BIG));
            // Another large size releases what is kept, then comes from the system.
            let c = cache.alloc(layout(2 * BIG));
            assert_eq!(cache.kept_blocks(), 0);
            cache.dealloc(c, layout(2 * BIG));
            assert_eq!(cache.kept_blocks(), 1);
            // A different alignment is another layout.
            let d = cache.alloc(Layout::from_size_align(2 * BIG, 4096).unwrap());
            assert_eq!(cache.kept_blocks(), 0);
            assert_eq!(d as usize % 4096, 0);
            cache.dealloc(d, Layout::from_size_align(2 * BIG, 4096).unwrap());
            assert!(cache.take(layout(3 * BIG)).is_none());
        }
    }

    #[test]
    fn small_blocks_are_not_kept() {
        let cache = LargeBlockCache::new();
        unsafe {
            let a = cache.alloc(layout(1024));
            cache.dealloc(a, layout(1024));
        }
        assert_eq!(cache.kept_blocks(), 0);
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        let cache = LargeBlockCache::new();
        unsafe {
            let a = cache.alloc(layout(BIG));
            ptr::write_bytes(a, 0xAB, BIG);
            cache.dealloc(a, layout(BIG));
            let b = cache.alloc_zeroed(layout(BIG));
            assert_eq!(a, b);
            assert!(std::slice::from_raw_parts(b, BIG).iter().all(|&v| v == 0));
            cache.dealloc(b, layout(BIG));
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_the_threshold() {
        let cache = LargeBlockCache::new();
        unsafe {
            let small = cache.alloc(layout(4096));
            for i in 0..4096 {
                small.add(i).write(i as u8);
            }
            let big = cache.realloc(small, layout(4096), BIG);
            assert!((0..4096).all(|i| big.add(i).read() == i as u8));
            let back = cache.realloc(big, layout(BIG), 1024);
            assert!((0..1024).all(|i| back.add(i).read() == i as u8));
            assert_eq!(
                cache.kept_blocks(),
                1,
                "the large block was freed into the cache"
            );
            cache.dealloc(back, layout(1024));
            assert!(cache.take(layout(1)).is_none());
        }
    }
}
