//! Each artist's voiceprints linked in a ring of slots, so that a graph search that reaches
//! one voiceprint of an artist can score all of them. The graph's selection heuristic spends
//! few links inside one artist's tight group, and its searches found one voiceprint of the
//! query's artist yet missed a sibling in 20 of the 23 own-artist misses counted at 300,000
//! voiceprints (ef 1,024).

/// No slot.
const NONE: u32 = u32::MAX;

/// The rings: `next[slot]` is the next live slot of the same artist (the slot itself when it
/// is its artist's only one), `head[artist]` one live slot of each artist with any.
#[derive(Debug, Clone, Default)]
pub(super) struct Rings {
    next: Vec<u32>,
    head: Vec<u32>,
}

impl Rings {
    /// Rings over slots `0..artist_of.len()`, slot `s` belonging to artist `artist_of[s]`.
    pub(super) fn new(artist_of: &[u32]) -> Self {
        let mut rings = Self {
            next: Vec::with_capacity(artist_of.len()),
            head: Vec::new(),
        };
        for (slot, &artist) in artist_of.iter().enumerate() {
            rings.join(slot as u32, artist);
        }
        rings
    }

    /// Adds `slot`, the next slot, to `artist`'s ring.
    pub(super) fn join(&mut self, slot: u32, artist: u32) {
        assert_eq!(slot as usize, self.next.len(), "slots join in order");
        let artist = artist as usize;
        if self.head.len() <= artist {
            self.head.resize(artist + 1, NONE);
        }
        match self.head[artist] {
            NONE => {
                self.next.push(slot);
                self.head[artist] = slot;
            }
            head => {
                self.next.push(self.next[head as usize]);
                self.next[head as usize] = slot;
            }
        }
    }

    /// Takes `slot` out of `artist`'s ring (it is left a ring of its own).
    pub(super) fn leave(&mut self, slot: u32, artist: u32) {
        let mut before = slot;
        while self.next[before as usize] != slot {
            before = self.next[before as usize];
        }
        let artist = artist as usize;
        if before == slot {
            self.head[artist] = NONE;
        } else {
            self.next[before as usize] = self.next[slot as usize];
            self.next[slot as usize] = slot;
            if self.head[artist] == slot {
                self.head[artist] = before;
            }
        }
    }

    /// The other slots in `slot`'s ring, in ring order.
    pub(super) fn others(&self, slot: u32) -> impl Iterator<Item = u32> + '_ {
        let mut at = slot;
        std::iter::from_fn(move || {
            at = self.next[at as usize];
            (at != slot).then_some(at)
        })
    }

    /// Bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        (self.next.capacity() + self.head.capacity()) * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(rings: &Rings, slot: u32) -> Vec<u32> {
        let mut all: Vec<u32> = rings.others(slot).collect();
        all.push(slot);
        all.sort_unstable();
        all
    }

    #[test]
    fn rings_follow_joins_and_leaves() {
        let mut rings = Rings::new(&[0, 1, 0, 0, 2]);
        assert_eq!(ring(&rings, 0), [0, 2, 3]);
        assert_eq!(ring(&rings, 3), [0, 2, 3]);
        assert_eq!(ring(&rings, 1), [1]);
        assert_eq!(rings.others(4).count(), 0);
        rings.leave(0, 0);
        assert_eq!(ring(&rings, 2), [2, 3]);
        assert_eq!(rings.others(0).count(), 0);
        rings.join(5, 0);
        assert_eq!(ring(&rings, 5), [2, 3, 5]);
        rings.leave(1, 1);
        rings.join(6, 1);
        assert_eq!(ring(&rings, 6), [6]);
        for slot in [2, 5, 3] {
            rings.leave(slot, 0);
        }
        rings.join(7, 0);
        assert_eq!(ring(&rings, 7), [7]);
    }
}
