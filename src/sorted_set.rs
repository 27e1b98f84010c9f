//! [`SortedSet`]: a set of small `Copy` values held as one sorted vector.
//!
//! For the sets that grow with the account and are only inserted into,
//! looked up and pruned: the webhook outbox's announced rotation ids and the
//! hashes of retired secrets. At 30,000 entries a `BTreeSet<Uuid>` took
//! about 1 MB (nodes about two-thirds full, each its own allocation) and a
//! `HashSet<u64>` 0.6 MB (a table sized to the next power of two above 8/7
//! of its entries); a sorted vector takes the entries' own size, once.
//!
//! Hand-written because the crates that keep a set in a sorted vector
//! insert in place, moving half the vector on every insert (at 30,000
//! random ids, gigabytes of copying in a pass). New values go to a short
//! unsorted tail, merged into the sorted part once it holds [`TAIL`]:
//! inserts cost O(n / TAIL) moves each, lookups a binary search and a scan
//! of at most `TAIL` values.

use std::fmt;

/// How many values wait unsorted before they are merged.
const TAIL: usize = 64;

#[derive(Clone)]
pub struct SortedSet<T> {
    /// Sorted, no duplicates.
    sorted: Vec<T>,
    /// Unsorted, none of them in `sorted` or repeated; shorter than `TAIL`.
    tail: Vec<T>,
}

impl<T> Default for SortedSet<T> {
    fn default() -> Self {
        SortedSet {
            sorted: Vec::new(),
            tail: Vec::new(),
        }
    }
}

impl<T: Ord + Copy> SortedSet<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, value: &T) -> bool {
        self.sorted.binary_search(value).is_ok() || self.tail.contains(value)
    }

    /// Adds `value`; whether it was new.
    pub fn insert(&mut self, value: T) -> bool {
        if self.contains(&value) {
            return false;
        }
        self.tail.push(value);
        if self.tail.len() >= TAIL {
            self.merge();
        }
        true
    }

    /// Moves the tail into the sorted part, merging from the back in
    /// place (a stable sort would merge the two runs as fast, but with a
    /// scratch buffer as large as the set).
    fn merge(&mut self) {
        self.tail.sort_unstable();
        let (mut i, mut j) = (self.sorted.len(), self.tail.len());
        // Placeholders, overwritten below: `sorted[..i]` and `tail[..j]`
        // are merged into `sorted[..i + j]`, largest first.
        self.sorted.extend_from_slice(&self.tail);
        while j > 0 {
            let k = i + j - 1;
            if i > 0 && self.sorted[i - 1] > self.tail[j - 1] {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = self.tail[j - 1];
                j -= 1;
            }
        }
        self.tail.clear();
    }

    /// Keeps the values `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.sorted.retain(&mut keep);
        self.tail.retain(keep);
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let mut tail: Vec<&T> = self.tail.iter().collect();
        tail.sort_unstable();
        Merged {
            sorted: self.sorted.iter().peekable(),
            tail: tail.into_iter().peekable(),
        }
    }
}

/// Two ascending sequences as one.
struct Merged<'a, T: 'a, A: Iterator<Item = &'a T>, B: Iterator<Item = &'a T>> {
    sorted: std::iter::Peekable<A>,
    tail: std::iter::Peekable<B>,
}

impl<'a, T: Ord + 'a, A: Iterator<Item = &'a T>, B: Iterator<Item = &'a T>> Iterator
    for Merged<'a, T, A, B>
{
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        match (self.sorted.peek(), self.tail.peek()) {
            (Some(a), Some(b)) if b < a => self.tail.next(),
            (Some(_), _) => self.sorted.next(),
            (None, _) => self.tail.next(),
        }
    }
}

impl<T: Ord + Copy> FromIterator<T> for SortedSet<T> {
    /// Sorted once, not merged value by value.
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut sorted: Vec<T> = values.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.shrink_to_fit();
        SortedSet {
            sorted,
            tail: Vec::new(),
        }
    }
}

impl<T: Ord + Copy> PartialEq for SortedSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Ord + Copy> Eq for SortedSet<T> {}

impl<T: Ord + Copy + fmt::Debug> fmt::Debug for SortedSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T: Ord + Copy + serde::Serialize> serde::Serialize for SortedSet<T> {
    /// A sequence in ascending order, as a `BTreeSet` writes it.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Any sequence of inserts, lookups and prunes leaves the set a
        /// `BTreeSet` would hold, in the same order.
        #[test]
        fn behaves_as_a_btreeset(ops in proptest::collection::vec((0u8..20, 0u16..2000), 0..2000)) {
            let mut set = SortedSet::new();
            let mut model = BTreeSet::new();
            for (op, value) in ops {
                match op {
                    // Mostly inserts, so that the tail is merged many times.
                    0..=13 => prop_assert_eq!(set.insert(value), model.insert(value)),
                    14..=18 => prop_assert_eq!(set.contains(&value), model.contains(&value)),
                    _ => {
                        set.retain(|v| v % 5 != value % 5);
                        model.retain(|v| v % 5 != value % 5);
                    }
                }
                prop_assert_eq!(set.len(), model.len());
            }
            prop_assert!(set.iter().eq(model.iter()));
            let collected: SortedSet<u16> = model.iter().rev().copied().chain(model.iter().copied()).collect();
            prop_assert!(collected == set);
        }
    }

    #[test]
    fn serialises_in_order_and_shows_its_values() {
        let mut set = SortedSet::new();
        for v in [5u32, 1, 9, 3] {
            set.insert(v);
        }
        assert_eq!(serde_json::to_string(&set).unwrap(), "[1,3,5,9]");
        assert_eq!(format!("{set:?}"), "{1, 3, 5, 9}");
    }

    #[test]
    fn holds_its_entries_once() {
        let mut set = SortedSet::new();
        for v in (0..30_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
            set.insert(v);
        }
        assert_eq!(set.len(), 30_000);
        assert!(set.sorted.windows(2).all(|w| w[0] < w[1]));
        assert!((0..30_000u64).all(|i| set.contains(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15))));
        // The sorted part grows by doubling: at most twice its entries.
        assert!(set.sorted.capacity() <= 2 * 30_000);
        assert!(set.tail.len() < TAIL);
    }
}
