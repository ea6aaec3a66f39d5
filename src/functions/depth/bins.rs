//! Mean depth (and bases at or above thresholds) per fixed window or BED interval, from the runs
//! of one reference in order, as `mosdepth --by` and `--thresholds` compute them.

use std::collections::VecDeque;
use std::sync::Arc;

use super::count::Run;

/// A window or interval being summed: 0-based, half-open.
#[derive(Debug, Clone)]
pub struct Bin {
    pub start: i64,
    pub end: i64,
    pub name: Option<Arc<str>>,
    /// The sum of the depth over the bin's bases.
    pub depth_sum: i64,
    /// For each threshold, the bases whose depth is at least it.
    pub at_least: Vec<i64>,
}

impl Bin {
    pub fn new(start: i64, end: i64, name: Option<Arc<str>>, thresholds: usize) -> Self {
        Self { start, end, name, depth_sum: 0, at_least: vec![0; thresholds] }
    }

    /// mosdepth's mean: over the bin's whole length, bases past the reference's end being 0.
    pub fn mean(&self) -> f64 {
        let length = self.end - self.start;
        if length > 0 {
            self.depth_sum as f64 / length as f64
        } else {
            0.0
        }
    }
}

/// Sums runs into bins that come in start order (BED intervals may overlap one another).
pub struct BinSummer<I: Iterator<Item = Bin>> {
    upcoming: std::iter::Peekable<I>,
    open: VecDeque<Bin>,
    thresholds: Arc<[i32]>,
}

impl<I: Iterator<Item = Bin>> BinSummer<I> {
    pub fn new(bins: I, thresholds: Arc<[i32]>) -> Self {
        Self { upcoming: bins.peekable(), open: VecDeque::new(), thresholds }
    }

    /// Adds a run; `out` receives the bins it completes, in order.
    pub fn add(&mut self, run: Run, out: &mut impl FnMut(Bin)) {
        while let Some(bin) = self.upcoming.next_if(|b| b.start < run.end) {
            self.open.push_back(bin);
        }
        for bin in self.open.iter_mut() {
            let overlap = bin.end.min(run.end) - bin.start.max(run.start);
            if overlap <= 0 {
                continue;
            }
            bin.depth_sum += overlap * i64::from(run.depth);
            for (count, &threshold) in bin.at_least.iter_mut().zip(self.thresholds.iter()) {
                if run.depth >= threshold {
                    *count += overlap;
                }
            }
        }
        while self.open.front().is_some_and(|b| b.end <= run.end) {
            out(self.open.pop_front().unwrap());
        }
    }

    /// Gives out the bins no run reached or completed.
    pub fn finish(mut self, out: &mut impl FnMut(Bin)) {
        self.open.drain(..).chain(self.upcoming).for_each(out);
    }
}

/// The fixed windows of `size` bases (counted from the reference's start) within `[start, end)`.
pub fn windows(size: i64, start: i64, end: i64, thresholds: usize) -> impl Iterator<Item = Bin> {
    let first = start - start.rem_euclid(size);
    (0..)
        .map(move |k| first + k * size)
        .take_while(move |&s| s < end)
        .map(move |s| Bin::new(s.max(start), (s + size).min(end), None, thresholds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bins: Vec<Bin>, runs: &[Run]) -> Vec<(i64, i64, f64, Vec<i64>)> {
        let mut summer = BinSummer::new(bins.into_iter(), Arc::from(vec![1, 2]));
        let mut done = Vec::new();
        for &run in runs {
            summer.add(run, &mut |b| done.push(b));
        }
        summer.finish(&mut |b| done.push(b));
        done.into_iter().map(|b| (b.start, b.end, b.mean(), b.at_least)).collect()
    }

    #[test]
    fn windows_cover_the_range_and_stop_at_its_end() {
        let w: Vec<_> = windows(10, 0, 25, 0).map(|b| (b.start, b.end)).collect();
        assert_eq!(w, [(0, 10), (10, 20), (20, 25)]);
        let w: Vec<_> = windows(10, 15, 32, 0).map(|b| (b.start, b.end)).collect();
        assert_eq!(w, [(15, 20), (20, 30), (30, 32)]);
    }

    #[test]
    fn means_and_thresholds_over_runs() {
        let runs = [
            Run { start: 0, end: 5, depth: 0 },
            Run { start: 5, end: 8, depth: 2 },
            Run { start: 8, end: 20, depth: 1 },
        ];
        let got = sum(windows(10, 0, 20, 2).collect(), &runs);
        assert_eq!(got, [(0, 10, 0.8, vec![5, 3]), (10, 20, 1.0, vec![10, 0])]);
    }

    #[test]
    fn overlapping_intervals_and_one_past_the_runs() {
        let runs = [Run { start: 0, end: 10, depth: 3 }];
        let bins = vec![Bin::new(0, 10, None, 2), Bin::new(2, 4, None, 2), Bin::new(8, 12, None, 2)];
        let got = sum(bins, &runs);
        assert_eq!(got, [(0, 10, 3.0, vec![10, 10]), (2, 4, 3.0, vec![2, 2]), (8, 12, 1.5, vec![2, 2])]);
    }
}
