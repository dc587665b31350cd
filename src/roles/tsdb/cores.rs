//! Splitting a query's independent per-series work over the cores: decoding
//! and merging each series' chunks, and each series' windows of a range
//! function. A 2-core device answers a large query in about half the time;
//! small ones stay on the calling thread (threads cost more than they save).

/// Work units (samples, windows) below which one thread does it all.
pub const PARALLEL_WORK: usize = 100_000;

/// Threads a query may use: the cores, at most four.
pub fn threads_for(work: usize) -> usize {
    if work < PARALLEL_WORK { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()).min(4) }
}

/// `f` over `items` split into one consecutive part per thread `work`
/// earns: the results in the parts' order.
pub fn split<T: Sync, R: Send>(items: &[T], work: usize, f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = threads_for(work);
    if threads <= 1 || items.len() < 2 {
        return vec![f(items)];
    }
    let part = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.chunks(part).map(|chunk| scope.spawn(move || f(chunk))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// `f` over `items` split as in `split`, each part filling its own
/// `per_item` slots of `out` per item (`out` holds `items.len() * per_item`).
pub fn fill<T: Sync, R: Send>(
    items: &[T],
    out: &mut [R],
    per_item: usize,
    work: usize,
    f: impl Fn(&[T], &mut [R]) + Sync,
) {
    let threads = threads_for(work);
    if threads <= 1 || items.len() < 2 || per_item == 0 {
        return f(items, out);
    }
    let part = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        for (chunk, slots) in items.chunks(part).zip(out.chunks_mut(part * per_item)) {
            scope.spawn(move || f(chunk, slots));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_back_in_order_and_cover_every_item() {
        let items: Vec<u32> = (0..1000).collect();
        for work in [0, PARALLEL_WORK * 10] {
            let parts = split(&items, work, |c| c.to_vec());
            assert_eq!(parts.concat(), items, "work {work}");
        }
        assert_eq!(split(&[] as &[u32], PARALLEL_WORK, <[u32]>::len), vec![0]);
    }

    #[test]
    fn fill_gives_each_part_its_own_slots() {
        let items: Vec<u32> = (0..1001).collect();
        for work in [0, PARALLEL_WORK * 10] {
            let mut out = vec![0u32; items.len() * 3];
            fill(&items, &mut out, 3, work, |chunk, slots| {
                for (item, s) in chunk.iter().zip(slots.chunks_mut(3)) {
                    s.copy_from_slice(&[*item, item * 2, item * 3]);
                }
            });
            let want: Vec<u32> = items.iter().flat_map(|i| [*i, i * 2, i * 3]).collect();
            assert_eq!(out, want, "work {work}");
        }
    }
}
