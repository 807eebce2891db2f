//! The global allocator every service installs: mimalloc, called through its C interface.
//!
//! Written here rather than taken from the `mimalloc` crate's `MiMalloc`, which sends every
//! allocation through mimalloc's aligned entry points. Those serve a size whose block is not
//! a power of two by over-allocating on a slow path: in the gateway that was about 160
//! instructions more on each of two or three allocations per request (callgrind). A layout
//! that a plain block already satisfies goes to the plain entry points instead; only
//! alignments above that take the aligned ones.
//!
//! Which layouts a plain block satisfies: mimalloc starts every page's first block on a
//! 16-byte boundary and sizes its blocks in multiples of 8 bytes, and in multiples of 16 for
//! every size class above 16 bytes. So a block for `size` bytes is aligned to any power of
//! two up to 16 that divides `size`. (`alignments_are_kept` below checks this across sizes.)
//! Larger alignments go to mimalloc's aligned calls, as before.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as mi;

/// mimalloc as the global allocator: `#[global_allocator] static A: Mimalloc = Mimalloc;`.
pub struct Mimalloc;

/// The largest alignment a plain mimalloc block can provide.
const PLAIN_ALIGN: usize = 16;

fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && size.is_multiple_of(align)
}

// SAFETY: every pointer handed out comes from mimalloc, which frees any of them with
// `mi_free` and resizes any with `mi_realloc`/`mi_realloc_aligned`; each call asks for at
// least the layout's size, at its alignment (plain calls only where their blocks have it).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C calls with any size; a null return is passed on as failure.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the trait's contract), so from mimalloc.
        unsafe { mi::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc; the new block keeps the layout's alignment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignments_are_kept() {
        let a = Mimalloc;
        let mut held = Vec::new();
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=4096).chain([10_000, 65_536, 100_000, 1 << 20, 3 << 20]) {
                let size = size.max(align);
                let layout = Layout::from_size_align(size, align).expect("a layout");
                // SAFETY: a non-zero size; every block is freed below with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xa5, size);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size}, align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    let grown = a.realloc(p, layout, size * 2 + 8);
                    assert_eq!(grown as usize % align, 0, "grown {size}, align {align}");
                    assert!(std::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|b| *b == 0xa5));
                    // Kept a while, so later blocks come from partly used pages.
                    held.push((grown, Layout::from_size_align(size * 2 + 8, align).unwrap()));
                    a.dealloc(z, layout);
                }
            }
            for (p, layout) in held.drain(..) {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { a.dealloc(p, layout) }
            }
        }
    }
}
