//! From group sizes and rules to how many copies of each document to write.
//!
//! [`solve`] finds each group's scale (output units / input units). Groups with a weight get
//! that share of the output; groups without one are kept as they are, together taking the
//! share the weights leave (shrunk uniformly if a weighted group cannot keep up). The total is
//! the largest every target share allows: a weighted group's output is bounded by its cap and
//! by `max_repeat` times its input, an unweighted group's by its input (and cap); and it is
//! never more than what uses the group richest in data (for its share) exactly once, so no
//! group is repeated beyond what the shares need.
//!
//! [`assign_repeats`] turns a group's scale into whole copies per document: every document
//! gets `floor(scale)` copies, and the remaining units go to one more copy of documents taken
//! in the order of a seeded hash of their ids until the remainder is filled (to within half
//! a document). So reruns give the same output, thread counts do not matter, and a group's
//! output is its target to within one document, not a random draw around it.

use crate::config::RemixConfig;
use std::collections::BTreeMap;

/// A group's plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupPlan {
    /// Input units (bytes or documents).
    pub input: f64,
    /// Output units the plan asks for.
    pub target_units: f64,
    /// target_units / input.
    pub scale: f64,
    /// Target share of the output (a weighted group's weight, normalized; an unweighted
    /// group's share of what the weights leave).
    pub target_share: f64,
    /// Whether the share came from a weight (else: kept as it is).
    pub weighted: bool,
    /// Most copies of one document.
    pub max_copies: u32,
}

/// Solves the scales of `sizes` (group -> input units, all > 0) under `config`'s rules.
pub fn solve(sizes: &BTreeMap<String, f64>, config: &RemixConfig) -> Result<BTreeMap<String, GroupPlan>, String> {
    let max_repeat = |g: &str| config.rule(g).max_repeat.unwrap_or(config.max_repeat);
    let cap = |g: &str| config.rule(g).cap.unwrap_or(f64::INFINITY);
    let weighted: Vec<&String> = sizes.keys().filter(|g| config.rule(g).weight.is_some()).collect();
    let as_is: Vec<&String> = sizes.keys().filter(|g| config.rule(g).weight.is_none()).collect();
    // What each unweighted group would keep on its own (its cap may shrink it).
    let natural: BTreeMap<&String, f64> = as_is.iter().map(|g| (*g, sizes[*g].min(cap(g)))).collect();
    let natural_total: f64 = natural.values().sum();
    let weight_total: f64 = weighted.iter().map(|g| config.rule(g).weight.unwrap_or(0.0)).sum();
    // Named groups absent from the data cannot take their share.
    for (name, rule) in &config.groups {
        if rule.weight.is_some_and(|w| w > 0.0) && !sizes.contains_key(name) {
            return Err(format!(
                "group `{name}` has weight {} but no documents (groups found: {}): set its weight to 0 or remove it",
                rule.weight.unwrap_or(0.0),
                sizes.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if weight_total > 1.0 + 1e-9 {
        return Err(format!("weights sum to {weight_total}: target shares must sum to at most 1"));
    }
    // Shares: weights as given when unweighted groups take the rest; normalized to 1 otherwise.
    let (share_of, rest_share) = if natural_total > 0.0 {
        (1.0, (1.0 - weight_total).max(0.0))
    } else if weight_total > 0.0 {
        (1.0 / weight_total, 0.0)
    } else {
        return Err("every group has weight 0 (or nothing to keep): the mixture would be empty".into());
    };
    // The largest total every share allows (share * total <= limit for each), but no larger
    // than needed to use the group richest in data for its share once: repeating every group
    // adds no information.
    let mut total = f64::INFINITY;
    let mut once = 0.0f64;
    for g in &weighted {
        let share = config.rule(g).weight.unwrap_or(0.0) * share_of;
        if share > 0.0 {
            let limit = cap(g).min(max_repeat(g) * sizes[*g]);
            total = total.min(limit / share);
            once = once.max(cap(g).min(sizes[*g]) / share);
        }
    }
    if rest_share > 0.0 {
        total = total.min(natural_total / rest_share);
        once = once.max(natural_total / rest_share);
    }
    total = total.min(once);
    if !total.is_finite() {
        return Err("no group can be kept: check the weights and caps".into());
    }
    let mut plans = BTreeMap::new();
    for (g, &input) in sizes {
        let rule = config.rule(g);
        let (target_share, weighted) = match rule.weight {
            Some(w) => (w * share_of, true),
            None if natural_total > 0.0 => (rest_share * natural[g] / natural_total, false),
            None => (0.0, false),
        };
        let target_units = target_share * total;
        // Copies per document: enough for the average, never more than the bound allows.
        let max_copies = if weighted { max_repeat(g).ceil() as u32 } else { 1 };
        plans.insert(
            g.clone(),
            GroupPlan { input, target_units, scale: target_units / input, target_share, weighted, max_copies },
        );
    }
    Ok(plans)
}

/// One document of a group: its weight in units and its sort key (seeded hash of the id, then
/// its position as a tie-break).
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub units: u64,
    pub key: (u64, u64),
}

/// Copies of each member (same order as `members`) so that their units sum to about
/// `plan.target_units`: `floor(scale)` each, plus one for members taken in key order until
/// the remainder is filled (a member is taken when that brings the sum closer to the target).
pub fn assign_repeats(members: &[Member], plan: &GroupPlan) -> Vec<u32> {
    let total: f64 = members.iter().map(|m| m.units as f64).sum();
    let scale = if total > 0.0 { plan.target_units / total } else { plan.scale };
    let base = (scale.floor() as u32).min(plan.max_copies);
    let mut repeats = vec![base; members.len()];
    if base >= plan.max_copies {
        return repeats;
    }
    let mut remainder = plan.target_units - base as f64 * total;
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_unstable_by_key(|&i| members[i].key);
    for i in order {
        if remainder <= 0.0 {
            break;
        }
        let units = members[i].units as f64;
        if units <= 2.0 * remainder {
            repeats[i] += 1;
            remainder -= units;
        }
    }
    repeats
}

/// The key that orders a group's documents: a seeded hash of the id (xxh3), and the document's
/// global position to break ties between equal ids.
pub fn member_key(id: &str, seed: u64, position: u64) -> (u64, u64) {
    (xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), seed), position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupRule;
    use proptest::prelude::*;

    fn config(rules: &[(&str, Option<f64>, Option<f64>)], max_repeat: f64) -> RemixConfig {
        let mut c = RemixConfig { max_repeat, ..RemixConfig::default() };
        for (name, weight, cap) in rules {
            c.groups.insert(name.to_string(), GroupRule { weight: *weight, cap: *cap, max_repeat: None });
        }
        c
    }

    fn sizes(s: &[(&str, f64)]) -> BTreeMap<String, f64> {
        s.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn equal_weights_upsample_the_small_group_up_to_the_bound() {
        // en 900, zh 100: 50/50 needs zh x9; max_repeat 3 gives zh 300 and en 300.
        let plans = solve(&sizes(&[("en", 900.0), ("zh", 100.0)]), &config(&[("en", Some(0.5), None), ("zh", Some(0.5), None)], 3.0)).unwrap();
        assert!((plans["zh"].target_units - 300.0).abs() < 1e-9);
        assert!((plans["en"].target_units - 300.0).abs() < 1e-9);
        assert!((plans["zh"].scale - 3.0).abs() < 1e-9 && (plans["en"].scale - 1.0 / 3.0).abs() < 1e-9);
        // A generous bound: en stays whole and zh is repeated 9 times.
        let plans = solve(&sizes(&[("en", 900.0), ("zh", 100.0)]), &config(&[("en", Some(0.5), None), ("zh", Some(0.5), None)], 10.0)).unwrap();
        assert!((plans["en"].scale - 1.0).abs() < 1e-9 && (plans["zh"].scale - 9.0).abs() < 1e-9);
    }

    #[test]
    fn caps_bound_the_total_and_unweighted_groups_fill_the_rest() {
        // en capped at 200 with share 0.5: total 400, zh 200.
        let plans = solve(&sizes(&[("en", 900.0), ("zh", 1000.0)]), &config(&[("en", Some(0.5), Some(200.0)), ("zh", Some(0.5), None)], 3.0)).unwrap();
        assert!((plans["en"].target_units - 200.0).abs() < 1e-9 && (plans["zh"].target_units - 200.0).abs() < 1e-9);
        // en 0.25; fr and de unweighted share the remaining 0.75 in their natural proportion.
        let plans = solve(&sizes(&[("en", 100.0), ("fr", 200.0), ("de", 100.0)]), &config(&[("en", Some(0.25), None)], 1.0)).unwrap();
        assert!((plans["fr"].target_units - 200.0).abs() < 1e-9, "{plans:?}");
        assert!((plans["en"].target_units - 100.0).abs() < 1e-9);
        assert!((plans["fr"].target_share - 0.5).abs() < 1e-9);
        // A cap on an unweighted group only bounds that group.
        let plans = solve(&sizes(&[("fr", 200.0), ("de", 100.0)]), &config(&[("fr", None, Some(50.0))], 1.0)).unwrap();
        assert!((plans["fr"].target_units - 50.0).abs() < 1e-9 && (plans["de"].target_units - 100.0).abs() < 1e-9);
    }

    #[test]
    fn weight_zero_drops_and_impossible_mixtures_are_errors() {
        let mut c = config(&[("en", Some(1.0), None)], 1.0);
        c.default.weight = Some(0.0);
        let plans = solve(&sizes(&[("en", 10.0), ("xx", 5.0)]), &c).unwrap();
        assert_eq!(plans["xx"].target_units, 0.0);
        let err = solve(&sizes(&[("en", 10.0)]), &config(&[("en", Some(0.5), None), ("zh", Some(0.5), None)], 3.0)).unwrap_err();
        assert!(err.contains("`zh`") && err.contains("no documents"), "{err}");
        let err = solve(&sizes(&[("en", 10.0)]), &config(&[("en", Some(0.0), None)], 1.0)).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    fn members(n: usize, seed: u64) -> Vec<Member> {
        (0..n).map(|i| Member { units: 50 + (i as u64 * 7919) % 500, key: member_key(&format!("doc-{i}"), seed, i as u64) }).collect()
    }

    fn plan(target: f64, max_copies: u32) -> GroupPlan {
        GroupPlan { input: 0.0, target_units: target, scale: 0.0, target_share: 0.0, weighted: true, max_copies }
    }

    #[test]
    fn repeats_hit_the_target_within_one_document_and_respect_the_bound() {
        let m = members(1000, 7);
        let total: u64 = m.iter().map(|x| x.units).sum();
        for factor in [0.1, 0.5, 1.0, 1.37, 2.5, 2.999] {
            let target = factor * total as f64;
            let r = assign_repeats(&m, &plan(target, 3));
            let got: u64 = m.iter().zip(&r).map(|(x, &k)| x.units * k as u64).sum();
            assert!((got as f64 - target).abs() <= 275.0, "factor {factor}: {got} vs {target}");
            assert!(r.iter().all(|&k| k <= 3 && k >= factor.floor() as u32));
        }
        // Never more than the bound, even when the target asks for more.
        let r = assign_repeats(&m, &plan(10.0 * total as f64, 3));
        assert!(r.iter().all(|&k| k == 3));
    }

    #[test]
    fn fractional_copies_are_drawn_by_seed_deterministically() {
        let total: u64 = members(1000, 1).iter().map(|x| x.units).sum();
        let target = 1.5 * total as f64;
        let a = assign_repeats(&members(1000, 1), &plan(target, 3));
        assert_eq!(a, assign_repeats(&members(1000, 1), &plan(target, 3)), "same seed, same copies");
        let b = assign_repeats(&members(1000, 2), &plan(target, 3));
        assert_ne!(a, b, "another seed picks other documents");
        let doubled = a.iter().filter(|&&k| k == 2).count();
        assert!((400..600).contains(&doubled), "about half get a second copy: {doubled}");
    }

    proptest! {
        /// Whatever the sizes and weights, the plan's shares are the normalized weights, no
        /// group goes past its bound, and the total is as large as the bounds allow without
        /// repeating every group.
        #[test]
        fn solved_shares_match_weights(a in 1.0f64..1e6, b in 1.0f64..1e6, c in 1.0f64..1e6,
                                       wa in 0.05f64..1.0, wb in 0.05f64..1.0, wc in 0.05f64..1.0, max_repeat in 1.0f64..5.0) {
            let sum = wa + wb + wc;
            let cfg = config(&[("a", Some(wa / sum), None), ("b", Some(wb / sum), None), ("c", Some(wc / sum), None)], max_repeat);
            let plans = solve(&sizes(&[("a", a), ("b", b), ("c", c)]), &cfg).unwrap();
            let total: f64 = plans.values().map(|p| p.target_units).sum();
            let (mut at_bound, mut used_once) = (false, false);
            for (g, w) in [("a", wa), ("b", wb), ("c", wc)] {
                let p = &plans[g];
                prop_assert!((p.target_units / total - w / sum).abs() < 1e-9);
                prop_assert!(p.scale <= max_repeat * (1.0 + 1e-9));
                at_bound |= (p.scale - max_repeat).abs() < 1e-9 * max_repeat;
                used_once |= (p.scale - 1.0).abs() < 1e-9;
            }
            // The total stops at the first limit: a group's repeat bound, or using the richest
            // group once; and never does every group repeat.
            prop_assert!(at_bound || used_once);
            prop_assert!(plans.values().any(|p| p.scale <= 1.0 + 1e-9));
        }
    }
}
