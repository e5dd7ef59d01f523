//! Graph algorithms over the dependency relation: topological order, cycles, up- and downstream.
//!
//! Iterative throughout, so a hostile 100,000-deep chain cannot overflow the stack.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::AssetKey;

/// `deps[k]` are the keys `k` reads from. Keys named only as dependencies are ignored here; the
/// loader reports them as unknown references.
pub type Dependencies = BTreeMap<AssetKey, BTreeSet<AssetKey>>;

/// Kahn's algorithm. Returns the order, or the keys that sit on or behind a cycle.
pub fn topological_order(deps: &Dependencies) -> Result<Vec<AssetKey>, Vec<AssetKey>> {
    let mut remaining: BTreeMap<&AssetKey, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&AssetKey, Vec<&AssetKey>> = BTreeMap::new();
    for (key, parents) in deps {
        let known = parents.iter().filter(|p| deps.contains_key(*p));
        let mut count = 0;
        for parent in known {
            dependents.entry(parent).or_default().push(key);
            count += 1;
        }
        remaining.insert(key, count);
    }
    let mut ready: VecDeque<&AssetKey> =
        remaining.iter().filter(|(_, n)| **n == 0).map(|(k, _)| *k).collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(key) = ready.pop_front() {
        order.push(key.clone());
        for child in dependents.get(key).into_iter().flatten() {
            let n = remaining.get_mut(child).expect("every dependent is a key of deps");
            *n -= 1;
            if *n == 0 {
                ready.push_back(child);
            }
        }
    }
    if order.len() == deps.len() {
        Ok(order)
    } else {
        let placed: BTreeSet<&AssetKey> = order.iter().collect();
        Err(deps.keys().filter(|k| !placed.contains(k)).cloned().collect())
    }
}

/// Every elementary cycle found by a depth-first walk, each reported once, as the list of keys
/// along it (the first key is not repeated at the end). Deterministic: keys visited in order.
pub fn find_cycles(deps: &Dependencies) -> Vec<Vec<AssetKey>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnStack,
        Done,
    }
    let mut marks: BTreeMap<&AssetKey, Mark> = deps.keys().map(|k| (k, Mark::Unvisited)).collect();
    let mut cycles = Vec::new();
    for start in deps.keys() {
        if marks[start] != Mark::Unvisited {
            continue;
        }
        // Each frame: the key and an iterator over its parents that exist in the graph.
        let mut stack: Vec<(&AssetKey, Vec<&AssetKey>)> = Vec::new();
        let parents_of = |k: &AssetKey| -> Vec<&AssetKey> {
            deps[k].iter().filter(|p| deps.contains_key(*p)).rev().collect()
        };
        marks.insert(start, Mark::OnStack);
        stack.push((start, parents_of(start)));
        while let Some((_, pending)) = stack.last_mut() {
            match pending.pop() {
                Some(next) => match marks[next] {
                    Mark::Unvisited => {
                        marks.insert(next, Mark::OnStack);
                        let frame = (next, parents_of(next));
                        stack.push(frame);
                    }
                    Mark::OnStack => {
                        let from = stack.iter().position(|(k, _)| *k == next).expect("on stack");
                        // The stack is in reading order already: a reads b reads c (reads a).
                        cycles.push(stack[from..].iter().map(|(k, _)| (*k).clone()).collect());
                    }
                    Mark::Done => {}
                },
                None => {
                    let (done, _) = stack.pop().expect("non-empty");
                    marks.insert(done, Mark::Done);
                }
            }
        }
    }
    cycles
}

/// Inverts the dependency relation: `downstream[k]` are the keys that read `k`.
pub fn downstream_index(deps: &Dependencies) -> BTreeMap<AssetKey, Vec<AssetKey>> {
    let mut index: BTreeMap<AssetKey, Vec<AssetKey>> = BTreeMap::new();
    for (key, parents) in deps {
        for parent in parents {
            index.entry(parent.clone()).or_default().push(key.clone());
        }
    }
    index
}

/// Breadth-first closure from `start` along `edges`, up to `depth` steps (None: unbounded).
/// The start keys are included.
pub fn reachable<'a, F, I>(
    start: impl IntoIterator<Item = AssetKey>,
    depth: Option<u32>,
    edges: F,
) -> BTreeSet<AssetKey>
where
    F: Fn(&AssetKey) -> I,
    I: IntoIterator<Item = &'a AssetKey>,
{
    let mut seen: BTreeSet<AssetKey> = BTreeSet::new();
    let mut queue: VecDeque<(AssetKey, u32)> = VecDeque::new();
    for key in start {
        if seen.insert(key.clone()) {
            queue.push_back((key, 0));
        }
    }
    while let Some((key, distance)) = queue.pop_front() {
        if depth.is_some_and(|d| distance >= d) {
            continue;
        }
        for next in edges(&key) {
            if seen.insert(next.clone()) {
                queue.push_back((next.clone(), distance + 1));
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Dependencies {
        edges
            .iter()
            .map(|(k, ps)| {
                let key = AssetKey::new(k).expect("test key");
                (key, ps.iter().map(|p| AssetKey::new(p).expect("test key")).collect())
            })
            .collect()
    }

    fn names(keys: &[AssetKey]) -> Vec<&str> {
        keys.iter().map(|k| k.as_str()).collect()
    }

    #[test]
    fn orders_parents_first() {
        let g = graph(&[("c", &["b"]), ("b", &["a"]), ("a", &[]), ("d", &["a", "c"])]);
        assert_eq!(names(&topological_order(&g).expect("acyclic")), ["a", "b", "c", "d"]);
    }

    #[test]
    fn reports_each_cycle_in_reading_order() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["d"]), ("e", &["a"])]);
        assert!(topological_order(&g).is_err());
        let found = find_cycles(&g);
        let cycles: Vec<Vec<&str>> = found.iter().map(|c| names(c)).collect();
        assert_eq!(cycles, vec![vec!["a", "b", "c"], vec!["d"]]);
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let keys: Vec<AssetKey> =
            (0..100_000).map(|i| AssetKey::new(&format!("a{i}")).expect("key")).collect();
        let mut g = Dependencies::new();
        for (i, key) in keys.iter().enumerate() {
            let parents =
                if i == 0 { BTreeSet::new() } else { BTreeSet::from([keys[i - 1].clone()]) };
            g.insert(key.clone(), parents);
        }
        g.get_mut(&keys[0]).expect("first").insert(keys[99_999].clone());
        let cycles = find_cycles(&g);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), 100_000);
    }
}
