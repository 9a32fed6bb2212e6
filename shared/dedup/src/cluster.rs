//! Deduplicating one dump against itself and the index: candidates, verification, components,
//! and the verdict for every document.

use crate::index::{Index, IndexedDoc, SegmentDocs};
use crate::minhash::{sample_similarity, Samples};
use crate::report::DumpStats;
use crate::union_find::UnionFind;
use crate::{DedupConfig, KeepRule};
use dsllm_core::error::Result;
use rayon::prelude::*;
use std::cmp::Reverse;

/// The sketched documents of one dump, in a deterministic order (input file, then row).
#[derive(Debug, Default, Clone)]
pub struct DumpDocs {
    pub ids: Vec<String>,
    pub exact_hashes: Vec<u128>,
    pub text_lengths: Vec<u32>,
    /// `len × bands` LSH band hashes.
    pub band_hashes: Vec<u64>,
    /// Bottom-k shingle samples, to verify candidates.
    pub samples: Samples,
}

impl DumpDocs {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The document a removed document duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Original {
    pub id: String,
    pub dump: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Kept,
    Removed {
        dup_of: Original,
        /// Estimated Jaccard similarity of the two (1 for exact duplicates).
        similarity: f32,
        /// Same normalized text.
        exact: bool,
    },
}

pub struct DumpOutcome {
    /// One per document of [`DumpDocs`], in its order.
    pub verdicts: Vec<Verdict>,
    pub stats: DumpStats,
    /// The kept documents, for the index.
    pub segment: SegmentDocs,
}

/// The sorted (band hash, document number) pairs of one band of the dump.
pub type BandList<'a> = dyn Fn(usize) -> Result<Vec<(u64, u32)>> + Sync + 'a;

/// A verified match of a new document with an indexed one.
#[derive(Debug, Clone, Copy)]
struct OldMatch {
    old: usize,
    similarity: f32,
    exact: bool,
}

impl OldMatch {
    /// Exact first, then most similar, then the earliest indexed document.
    fn better_than(&self, other: &OldMatch) -> bool {
        (self.exact, self.similarity, Reverse(self.old)) > (other.exact, other.similarity, Reverse(other.old))
    }
}

/// Deduplicates `docs` of `dump` against themselves and the segments of the index added before
/// `dump`. `band_list(b)` gives band b's sorted (hash, document) pairs (merged from the sorted runs
/// of the signature phase).
pub fn cluster_dump(config: &DedupConfig, dump: &str, docs: &DumpDocs, band_list: &BandList, index: &Index) -> Result<DumpOutcome> {
    let n = docs.len();
    let k = config.sample_size;
    let threshold = config.similarity_threshold;
    let cap = config.max_bucket_comparisons.max(1);
    let sample = |i: u32| docs.samples.get(i as usize);
    let estimate = |a: &[u32], b: &[u32]| sample_similarity(a, b, k);
    let consulted = index.segments_before(dump);

    // Exact duplicates within the dump: every copy joins the first of its group and sits out
    // the LSH work, which its group's first does for all of them.
    let mut by_exact: Vec<u32> = (0..n as u32).collect();
    by_exact.sort_unstable_by_key(|&i| (docs.exact_hashes[i as usize], i));
    let mut new_edges: Vec<(u32, u32)> = Vec::new();
    let mut exact_first: Vec<u32> = (0..n as u32).collect();
    for group in by_exact.chunk_by(|&a, &b| docs.exact_hashes[a as usize] == docs.exact_hashes[b as usize]) {
        for &copy in &group[1..] {
            new_edges.push((group[0], copy));
            exact_first[copy as usize] = group[0];
        }
    }
    let is_copy = |i: u32| exact_first[i as usize] != i;

    // Exact matches with earlier dumps.
    let mut exact_old: Vec<(u32, IndexedDoc)> = Vec::new();
    let firsts: Vec<u32> = by_exact.iter().copied().filter(|&i| !is_copy(i)).collect();
    for segment in 0..consulted {
        let old = index.read_exact(segment)?;
        let mut j = 0;
        for &i in &firsts {
            let hash = docs.exact_hashes[i as usize];
            while j < old.len() && old[j].0 < hash {
                j += 1;
            }
            let mut k = j;
            while k < old.len() && old[k].0 == hash {
                exact_old.push((i, IndexedDoc { segment: segment as u32, row: old[k].1 }));
                k += 1;
            }
        }
    }

    // LSH: band collisions within the dump (verified here) and with the index (verified below,
    // once the indexed samples they need are loaded).
    let per_band: Vec<Result<(Vec<(u32, u32)>, Vec<(u32, IndexedDoc)>)>> = (0..config.bands)
        .into_par_iter()
        .map(|band| {
            let mut list = band_list(band)?;
            list.retain(|&(_, i)| !is_copy(i));
            let mut edges = Vec::new();
            for bucket in list.chunk_by(|a, b| a.0 == b.0).filter(|b| b.len() > 1) {
                for j in 1..bucket.len() {
                    // Compare with earlier members until one verifies: one edge is enough to connect.
                    for &(_, i) in bucket[..j].iter().take(cap) {
                        if estimate(sample(i), sample(bucket[j].1)) >= threshold {
                            edges.push((i, bucket[j].1));
                            break;
                        }
                    }
                }
            }
            let mut old_candidates = Vec::new();
            for segment in 0..consulted {
                let mut reader = index.band_reader(segment, band)?;
                let mut start = 0;
                let mut run = (u64::MAX, 0usize);
                while let Some((hash, row)) = reader.next_entry()? {
                    // At most `cap` indexed documents per bucket: enough to find a match.
                    run = if run.0 == hash { (hash, run.1 + 1) } else { (hash, 1) };
                    if run.1 > cap {
                        continue;
                    }
                    while start < list.len() && list[start].0 < hash {
                        start += 1;
                    }
                    for &(_, i) in list[start..].iter().take_while(|e| e.0 == hash) {
                        old_candidates.push((i, IndexedDoc { segment: segment as u32, row }));
                    }
                }
            }
            Ok((edges, old_candidates))
        })
        .collect();
    let mut old_candidates = Vec::new();
    for result in per_band {
        let (edges, candidates) = result?;
        new_edges.extend(edges);
        old_candidates.extend(candidates);
    }
    old_candidates.sort_unstable();
    old_candidates.dedup();

    // The indexed documents involved, and their samples.
    let mut olds: Vec<IndexedDoc> = old_candidates.iter().map(|c| c.1).chain(exact_old.iter().map(|c| c.1)).collect();
    olds.sort_unstable();
    olds.dedup();
    let mut old_samples = Samples::default();
    for group in olds.chunk_by(|a, b| a.segment == b.segment) {
        let rows: Vec<u32> = group.iter().map(|d| d.row).collect();
        index.read_samples(group[0].segment as usize, &rows, &mut old_samples)?;
    }
    let old_index = |d: IndexedDoc| olds.binary_search(&d).expect("collected above");
    let old_sample = |o: usize| old_samples.get(o);

    let mut best_old: Vec<Option<OldMatch>> = vec![None; n];
    let mut consider = |i: u32, m: OldMatch| {
        let slot = &mut best_old[i as usize];
        if slot.map(|b| m.better_than(&b)).unwrap_or(true) {
            *slot = Some(m);
        }
    };
    let mut old_edges = Vec::new();
    for &(i, d) in &exact_old {
        let old = old_index(d);
        consider(i, OldMatch { old, similarity: 1.0, exact: true });
        old_edges.push((i, old));
    }
    for &(i, d) in &old_candidates {
        let old = old_index(d);
        let similarity = estimate(sample(i), old_sample(old));
        if similarity >= threshold {
            consider(i, OldMatch { old, similarity, exact: false });
            old_edges.push((i, old));
        }
    }

    // Components over the dump's documents (0..n) and the indexed ones (n..).
    let mut uf = UnionFind::new(n + olds.len());
    for &(a, b) in &new_edges {
        uf.union(a, b);
    }
    for &(i, old) in &old_edges {
        uf.union(i, (n + old) as u32);
    }

    enum Target {
        New(u32),
        Old(usize),
    }
    let mut decided: Vec<Option<(Target, f32, bool)>> = (0..n).map(|_| None).collect();
    let mut stats = DumpStats { documents: n as u64, ..Default::default() };
    for component in uf.components().into_iter().filter(|c| c.len() > 1) {
        let split = component.partition_point(|&x| (x as usize) < n);
        let (new_members, old_members) = component.split_at(split);
        if new_members.is_empty() {
            continue;
        }
        *stats.cluster_sizes.entry(component.len() as u64).or_default() += 1;
        if let Some(&first_old) = old_members.first() {
            // The cluster already has a kept document: every new member goes.
            let fallback = first_old as usize - n;
            for &i in new_members {
                let direct = best_old[i as usize].or(best_old[exact_first[i as usize] as usize]);
                let m = direct.filter(|m| uf.find((n + m.old) as u32) == uf.find(i)).unwrap_or(OldMatch {
                    old: fallback,
                    similarity: estimate(sample(i), old_sample(fallback)),
                    exact: false,
                });
                decided[i as usize] = Some((Target::Old(m.old), m.similarity, m.exact));
                stats.removed_against_earlier_dumps += 1;
            }
        } else {
            let keep = *new_members
                .iter()
                .min_by_key(|&&i| {
                    let length = match config.keep_rule {
                        KeepRule::EarliestDumpThenSmallestId => 0,
                        KeepRule::EarliestDumpThenLongest => docs.text_lengths[i as usize],
                    };
                    (Reverse(length), &docs.ids[i as usize], i)
                })
                .expect("non-empty");
            for &i in new_members.iter().filter(|&&i| i != keep) {
                let exact = docs.exact_hashes[i as usize] == docs.exact_hashes[keep as usize];
                let similarity = if exact { 1.0 } else { estimate(sample(i), sample(keep)) };
                decided[i as usize] = Some((Target::New(keep), similarity, exact));
                stats.removed_within_dump += 1;
            }
        }
    }

    // Ids of the indexed originals named by removed documents.
    let mut named: Vec<usize> = decided.iter().flatten().filter_map(|(t, _, _)| if let Target::Old(o) = t { Some(*o) } else { None }).collect();
    named.sort_unstable();
    named.dedup();
    let mut named_ids: Vec<(usize, Original)> = Vec::with_capacity(named.len());
    for group in named.chunk_by(|&a, &b| olds[a].segment == olds[b].segment) {
        let segment = olds[group[0]].segment as usize;
        let rows: Vec<u32> = group.iter().map(|&o| olds[o].row).collect();
        let dump_name = index.manifest.dumps[segment].dump.clone();
        for (&o, id) in group.iter().zip(index.read_ids(segment, &rows)?) {
            named_ids.push((o, Original { id, dump: dump_name.clone() }));
        }
    }

    let mut verdicts = Vec::with_capacity(n);
    let mut segment = SegmentDocs::default();
    for (i, decision) in decided.into_iter().enumerate() {
        match decision {
            None => {
                verdicts.push(Verdict::Kept);
                stats.kept += 1;
                segment.ids.push(docs.ids[i].clone());
                segment.exact_hashes.push(docs.exact_hashes[i]);
                segment.band_hashes.extend_from_slice(&docs.band_hashes[i * config.bands..(i + 1) * config.bands]);
                segment.samples.push(sample(i as u32));
            }
            Some((target, similarity, exact)) => {
                let dup_of = match target {
                    Target::New(k) => Original { id: docs.ids[k as usize].clone(), dump: dump.to_string() },
                    Target::Old(o) => named_ids[named_ids.binary_search_by_key(&o, |x| x.0).expect("loaded")].1.clone(),
                };
                if exact {
                    stats.removed_exact += 1;
                } else {
                    stats.removed_near += 1;
                }
                verdicts.push(Verdict::Removed { dup_of, similarity, exact });
            }
        }
    }
    Ok(DumpOutcome { verdicts, stats, segment })
}

/// Sorted (band hash, document) lists computed in memory from the band hashes: for tests and
/// for callers that hold a whole dump anyway.
pub fn band_lists_in_memory(config: &DedupConfig, docs: &DumpDocs) -> Vec<Vec<(u64, u32)>> {
    let mut lists = vec![Vec::with_capacity(docs.len()); config.bands];
    for (i, hashes) in docs.band_hashes.chunks_exact(config.bands).enumerate() {
        for (band, &hash) in hashes.iter().enumerate() {
            lists[band].push((hash, i as u32));
        }
    }
    for list in &mut lists {
        list.sort_unstable();
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minhash::Sketcher;

    fn sketch_all(config: &DedupConfig, texts: &[(&str, String)]) -> DumpDocs {
        let mut s = Sketcher::new(config);
        let mut docs = DumpDocs::default();
        for (id, text) in texts {
            let sk = s.sketch(text);
            docs.ids.push(id.to_string());
            docs.exact_hashes.push(sk.exact_hash);
            docs.text_lengths.push(text.len() as u32);
            docs.band_hashes.extend(sk.band_hashes);
            docs.samples.push(&sk.sample);
        }
        docs
    }

    fn run(config: &DedupConfig, dump: &str, docs: &DumpDocs, index: &mut Index) -> DumpOutcome {
        let lists = band_lists_in_memory(config, docs);
        let out = cluster_dump(config, dump, docs, &|b| Ok(lists[b].clone()), index).unwrap();
        index.add_dump(dump, &out.segment, out.stats.clone(), config).unwrap();
        out
    }

    fn text(seed: usize, words: usize) -> String {
        (0..words).map(|i| format!("w{}", (i * 31 + seed * 1009) % 997)).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn near_and_exact_duplicates_within_and_across_dumps() {
        let config = DedupConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open_or_create(dir.path(), &config).unwrap();
        let base = text(1, 300);
        let edited = base.replacen("w", "W!", 1) + " one more";
        let first = sketch_all(
            &config,
            &[("b", base.clone()), ("a", base.to_uppercase()), ("c", text(2, 300)), ("d", edited.clone())],
        );
        let out = run(&config, "CC-1", &first, &mut index);
        assert_eq!(out.verdicts[1], Verdict::Kept, "smallest id kept");
        assert!(matches!(&out.verdicts[0], Verdict::Removed { dup_of, exact: true, .. } if dup_of.id == "a"));
        assert_eq!(out.verdicts[2], Verdict::Kept);
        assert!(matches!(&out.verdicts[3], Verdict::Removed { dup_of, exact: false, similarity, .. } if dup_of.id == "a" && *similarity > 0.8));
        assert_eq!((out.stats.removed_exact, out.stats.removed_near), (1, 1));
        assert_eq!(out.stats.cluster_sizes[&3], 1);

        let second = sketch_all(&config, &[("x", edited), ("y", text(3, 300)), ("z", text(2, 300))]);
        let out2 = run(&config, "CC-2", &second, &mut index);
        assert!(matches!(&out2.verdicts[0], Verdict::Removed { dup_of, .. } if dup_of.id == "a" && dup_of.dump == "CC-1"));
        assert_eq!(out2.verdicts[1], Verdict::Kept);
        assert!(matches!(&out2.verdicts[2], Verdict::Removed { dup_of, exact: true, .. } if dup_of.id == "c"));
        assert_eq!(out2.stats.removed_against_earlier_dumps, 2);
        assert_eq!(index.manifest.dumps[1].kept, 1);

        // Rerunning CC-2 consults only CC-1 and gives the same verdicts.
        let again = run(&config, "CC-2", &second, &mut index);
        assert_eq!(again.verdicts, out2.verdicts);
    }

    #[test]
    fn keep_rule_longest_keeps_the_longer_copy() {
        let config = DedupConfig { keep_rule: KeepRule::EarliestDumpThenLongest, ..DedupConfig::default() };
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open_or_create(dir.path(), &config).unwrap();
        let base = text(5, 400);
        let docs = sketch_all(&config, &[("a", base.clone()), ("b", base.clone() + " and a little tail")]);
        let out = run(&config, "CC-1", &docs, &mut index);
        assert_eq!(out.verdicts[1], Verdict::Kept);
        assert!(matches!(&out.verdicts[0], Verdict::Removed { dup_of, .. } if dup_of.id == "b"));
    }
}
