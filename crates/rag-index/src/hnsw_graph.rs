//! HNSW search on usearch's graph, read out of its serialized form, with distances computed four
//! at a time on the f32 side store.
//!
//! usearch measures one neighbour at a time: each distance waits on the first load of a vector
//! that is rarely in cache (64% of the distance kernel's samples sat on that load in a profile of
//! 1,000 queries at ef 16 over 100k × 384), and the next load starts only after it. FAISS's
//! `IndexHNSWFlat` computes the same number of distances per query (326 against 325 here) in
//! batches of four before any comparison branches on them, so four vectors stream from memory at
//! once. This module does the same on the same graph:
//! - the graph's adjacency is copied into flat arrays (level 0: `connectivity_base + 1` slots per
//!   node, a count then the neighbours; upper levels likewise, only for the nodes that have them);
//! - the unvisited neighbours of a candidate are gathered first, then measured four at a time
//!   ([`crate::distance::dots4`]), then offered to the candidate lists in order, which gives the
//!   same lists as usearch's one-at-a-time loop;
//! - vectors are read from the side store, by row, so the graph's own copy is not touched.
//!
//! The algorithm is usearch 2.26's `search`: a greedy descent from the entry point through the
//! upper levels, then a best-first search of level 0 with `max(ef, wanted)` candidates.
//!
//! The format read is usearch 2.26's dense serialization (`index_dense_gt::save_to_stream`):
//! `[u32 rows, u32 bytes per vector]`, the vectors, a 64-byte head (`"usearch"`, version
//! major/minor/patch as u16), then the graph: five u64 (`size`, `connectivity`,
//! `connectivity_base`, `max_level`, `entry_slot`), an i16 level per node, and every node's tape:
//! its u64 key, its i16 level, a u32 count and `connectivity_base` u32 slots for level 0, and a
//! count and `connectivity` slots per upper level. Anything else (another major version, a length
//! that does not add up, a removed node, a key the side store lacks) gives `None`, and the caller
//! searches through usearch instead: the graph is an accelerator, never the only way to search.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::vectors::{Candidate, VectorTable};

/// Bytes of usearch's dense head, after the vectors.
const HEAD_BYTES: usize = 64;
/// The serialization this reader knows: usearch 2.x.
const MAJOR_VERSION: u16 = 2;

/// usearch's graph in flat arrays, with each node's side-store row.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    entry: u32,
    max_level: usize,
    /// Side-store row of every slot.
    rows: Vec<u32>,
    /// Level 0: `base_width + 1` u32 per slot, a count then the neighbours' slots.
    base_width: usize,
    base: Vec<u32>,
    /// Upper levels: `width + 1` u32 per node and level; `upper_at[slot]` is the index (in such
    /// lists) of the slot's level 1, or `u32::MAX` for a node on level 0 only.
    width: usize,
    upper_at: Vec<u32>,
    upper: Vec<u32>,
}

/// A little-endian cursor over the serialized index; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

impl Graph {
    /// Reads the graph out of usearch's serialized index `blob`, mapping each node to its row of
    /// `table`. `None` where the blob is not the format described above or does not describe
    /// exactly the side store's vectors.
    pub(crate) fn parse(blob: &[u8], table: &VectorTable) -> Option<Self> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let mut r = Reader { bytes: blob, at: 0 };
        let (vectors, bytes_per_vector) = (r.u32()? as usize, r.u32()? as usize);
        r.take(vectors.checked_mul(bytes_per_vector)?)?;
        let head = r.take(HEAD_BYTES)?;
        if &head[..7] != b"usearch" || u16::from_le_bytes([head[7], head[8]]) != MAJOR_VERSION {
            return None;
        }
        let size = usize::try_from(r.u64()?).ok()?;
        let width = usize::try_from(r.u64()?).ok()?;
        let base_width = usize::try_from(r.u64()?).ok()?;
        let max_level = usize::try_from(r.u64()?).ok()?;
        let entry = u32::try_from(r.u64()?).ok()?;
        if size != vectors || size != table.len() || size == 0 || entry as usize >= size || u32::try_from(size).is_err()
        {
            return None;
        }
        let mut levels = Vec::with_capacity(size);
        for _ in 0..size {
            levels.push(usize::try_from(r.u16()? as i16).ok()?);
        }
        let mut rows = vec![u32::MAX; size];
        let mut base = vec![0u32; size * (base_width + 1)];
        let mut upper_at = vec![u32::MAX; size];
        let mut upper = Vec::new();
        for (slot, &level) in levels.iter().enumerate() {
            let row = table.row_of(r.u64()?)?;
            rows[slot] = u32::try_from(row).ok()?;
            if r.u16()? as i16 as isize != level as isize || level > max_level {
                return None;
            }
            let list = &mut base[slot * (base_width + 1)..(slot + 1) * (base_width + 1)];
            read_list(&mut r, list, size)?;
            if level > 0 {
                upper_at[slot] = u32::try_from(upper.len() / (width + 1)).ok()?;
                for _ in 0..level {
                    let start = upper.len();
                    upper.resize(start + width + 1, 0);
                    read_list(&mut r, &mut upper[start..], size)?;
                }
            }
        }
        if r.at != blob.len() || levels[entry as usize] != max_level {
            return None;
        }
        Some(Self { entry, max_level, rows, base_width, base, width, upper_at, upper })
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        4 * (self.rows.capacity() + self.base.capacity() + self.upper_at.capacity() + self.upper.capacity())
    }

    fn neighbors(&self, slot: u32, level: usize) -> &[u32] {
        let list = if level == 0 {
            let at = slot as usize * (self.base_width + 1);
            &self.base[at..at + self.base_width + 1]
        } else {
            let at = (self.upper_at[slot as usize] as usize + level - 1) * (self.width + 1);
            &self.upper[at..at + self.width + 1]
        };
        &list[1..1 + list[0] as usize]
    }

    /// The `wanted` nearest rows to `query` (best first) as usearch's search finds them with
    /// `ef` candidates: scores are exact, from the side store.
    pub(crate) fn search(&self, table: &VectorTable, query: &[f32], ef: usize, wanted: usize) -> Vec<Candidate> {
        let measure = Measure { table, query };
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch { visited, stamp, next, top, batch, distances } = &mut *scratch;
            // Greedy descent through the upper levels.
            let mut closest = self.entry;
            let mut closest_distance = measure.one(self.rows[closest as usize]);
            for level in (1..=self.max_level).rev() {
                loop {
                    let neighbors = self.neighbors(closest, level);
                    measure.many(&self.rows, neighbors, distances);
                    let before = closest;
                    for (&slot, &distance) in neighbors.iter().zip(distances.iter()) {
                        if distance < closest_distance {
                            (closest, closest_distance) = (slot, distance);
                        }
                    }
                    if closest == before {
                        break;
                    }
                }
            }

            // Best-first search of level 0.
            let ef = ef.max(wanted).max(1);
            if visited.len() < self.rows.len() {
                visited.resize(self.rows.len(), 0);
            }
            *stamp = stamp.wrapping_add(1);
            if *stamp == 0 {
                visited.fill(0);
                *stamp = 1;
            }
            next.clear();
            top.clear();
            visited[closest as usize] = *stamp;
            next.push(Reverse(Entry { distance: closest_distance, slot: closest }));
            top.push(Entry { distance: closest_distance, slot: closest });
            let mut radius = closest_distance;
            while let Some(&Reverse(candidate)) = next.peek() {
                if candidate.distance > radius && top.len() == ef {
                    break;
                }
                next.pop();
                batch.clear();
                for &slot in self.neighbors(candidate.slot, 0) {
                    let seen = &mut visited[slot as usize];
                    if *seen != *stamp {
                        *seen = *stamp;
                        batch.push(slot);
                    }
                }
                measure.many(&self.rows, batch, distances);
                for (&slot, &distance) in batch.iter().zip(distances.iter()) {
                    if top.len() < ef || distance < radius {
                        next.push(Reverse(Entry { distance, slot }));
                        top.push(Entry { distance, slot });
                        if top.len() > ef {
                            top.pop();
                        }
                        radius = top.peek().map_or(distance, |e| e.distance);
                    }
                }
            }
            let mut found: Vec<Entry> = top.drain().collect();
            found.sort_unstable();
            found.truncate(wanted);
            found
                .iter()
                .map(|e| {
                    let row = self.rows[e.slot as usize] as usize;
                    Candidate { score: -e.distance, id: table.ids()[row], row }
                })
                .collect()
        })
    }
}

/// Reads one neighbour list (a count, then `list.len() - 1` slots) into `list`, checking that
/// the count fits and every listed slot is a node.
fn read_list(r: &mut Reader<'_>, list: &mut [u32], size: usize) -> Option<()> {
    let count = r.u32()? as usize;
    if count >= list.len() {
        return None;
    }
    list[0] = count as u32;
    for (i, value) in list[1..].iter_mut().enumerate() {
        let slot = r.u32()?;
        if i < count {
            if slot as usize >= size {
                return None;
            }
            *value = slot;
        }
    }
    Some(())
}

/// A candidate on the lists: ordered by distance (smaller is nearer), ties by slot.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    distance: f32,
    slot: u32,
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance.total_cmp(&other.distance).then(self.slot.cmp(&other.slot))
    }
}

/// One thread's search state, kept between queries: the visited marks (a stamp per slot, so
/// that clearing them is one increment) and the lists' storage.
#[derive(Default)]
struct Scratch {
    visited: Vec<u32>,
    stamp: u32,
    next: BinaryHeap<Reverse<Entry>>,
    top: BinaryHeap<Entry>,
    batch: Vec<u32>,
    distances: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Distances from one query: the negated score, so that nearer is smaller as in usearch (`1 − a·b`
/// and `1 − cos` order the rows as `−a·b` and `−a·b / |b|` do for a fixed query).
struct Measure<'a> {
    table: &'a VectorTable,
    query: &'a [f32],
}

impl Measure<'_> {
    fn one(&self, row: u32) -> f32 {
        -self.table.score(self.query, row as usize)
    }

    /// The distances of `slots` (through `rows`) into `out`, four vectors at a time.
    fn many(&self, rows: &[u32], slots: &[u32], out: &mut Vec<f32>) {
        out.clear();
        let row = |i: usize| rows[slots[i] as usize] as usize;
        let mut i = 0;
        while i + 4 <= slots.len() {
            let r = [row(i), row(i + 1), row(i + 2), row(i + 3)];
            let dots = crate::distance::dots4(
                self.query,
                [self.table.row(r[0]), self.table.row(r[1]), self.table.row(r[2]), self.table.row(r[3])],
            );
            out.extend((0..4).map(|j| -self.table.score_of_dot(dots[j], r[j])));
            i += 4;
        }
        while i < slots.len() {
            out.push(self.one(rows[slots[i] as usize]));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use usearch::Index;

    use super::*;
    use crate::hnsw::HnswConfig;
    use crate::synthetic::Clustered;
    use crate::vectors::Metric;

    const DIM: usize = 8;

    /// usearch's serialized index of 300 clustered vectors (ids 1000..) and the side store.
    fn serialized() -> (Vec<u8>, VectorTable) {
        let n = 300;
        let data = Clustered::new(DIM, 8, 0.5, 1).sample(n, 2);
        let ids: Vec<u64> = (1000..1000 + n as u64).collect();
        let index = Index::new(&HnswConfig::default().options(DIM)).unwrap();
        index.reserve(n).unwrap();
        for (&id, v) in ids.iter().zip(data.chunks_exact(DIM)) {
            index.add(id, v).unwrap();
        }
        let mut table = VectorTable::new(DIM, Metric::InnerProduct);
        table.push(&ids, &data);
        let mut blob = vec![0u8; index.serialized_length()];
        index.save_to_buffer(&mut blob).unwrap();
        (blob, table)
    }

    #[test]
    fn reads_usearch_2_26s_serialization() {
        let (blob, table) = serialized();
        let graph = Graph::parse(&blob, &table).expect("usearch's own format");
        assert_eq!(graph.rows.len(), 300);
        // Every node is linked on level 0, and every listed neighbour is another node.
        for slot in 0..300u32 {
            let neighbors = graph.neighbors(slot, 0);
            assert!(!neighbors.is_empty() && neighbors.len() <= graph.base_width, "slot {slot}");
            assert!(neighbors.iter().all(|&n| n != slot && (n as usize) < 300));
        }
        // The nearest row to a stored vector is itself, found with the smallest list.
        for row in [0, 17, 299] {
            let query = table.row(row).to_vec();
            let hits = graph.search(&table, &query, 1, 1);
            let best = (0..300).map(|r| crate::distance::dot(&query, table.row(r))).fold(f32::MIN, f32::max);
            assert_eq!(hits.len(), 1);
            assert_eq!(hits[0].score, best, "row {row}");
            assert_eq!(hits[0].id, table.ids()[hits[0].row]);
        }
    }

    #[test]
    fn anything_but_that_format_is_declined() {
        let (blob, table) = serialized();
        let graph_at = 8 + 300 * DIM * 4;
        let mut variants: Vec<(&str, Vec<u8>)> = vec![
            ("one byte short", blob[..blob.len() - 1].to_vec()),
            ("one byte more", [&blob[..], &[0]].concat()),
            ("empty", Vec::new()),
        ];
        let mut magic = blob.clone();
        magic[graph_at] = b'x';
        variants.push(("another magic", magic));
        let mut major = blob.clone();
        major[graph_at + 7] = 3;
        variants.push(("major version 3", major));
        let mut entry = blob.clone();
        entry[graph_at + 64 + 32..graph_at + 64 + 40].copy_from_slice(&300u64.to_le_bytes());
        variants.push(("entry slot past the nodes", entry));
        let mut count = blob.clone();
        // The first node's level-0 count, after the levels and the node's key and level.
        let first = graph_at + 64 + 40 + 300 * 2 + 10;
        count[first..first + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        variants.push(("a neighbour count past the list", count));
        for (what, bytes) in variants {
            assert!(Graph::parse(&bytes, &table).is_none(), "{what}");
        }
        // A side store that lacks one of the graph's keys.
        let mut short = VectorTable::new(DIM, Metric::InnerProduct);
        short.push(&table.ids()[..299], &table.data()[..299 * DIM]);
        assert!(Graph::parse(&blob, &short).is_none());
    }
}
