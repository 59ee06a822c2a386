//! Consistent hashing: which node owns a key. Each node has many points on a 64-bit
//! ring; a key belongs to the first point at or after its hash, so adding or removing
//! a node moves only that node's share of keys.

use sha2::{Digest, Sha256};

/// Points per node: enough for an even spread over a handful of nodes.
const POINTS_PER_NODE: u32 = 128;

/// A ring over node indices.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

fn hash(s: &str) -> u64 {
    let d = Sha256::digest(s.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("sha256 is 32 bytes"))
}

impl Ring {
    /// A ring over `names`; owners are reported as indices into it.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut points: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(i, n)| (0..POINTS_PER_NODE).map(move |p| (hash(&format!("{}#{p}", n.as_ref())), i)))
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// Index of the node that owns `key`. None only for an empty ring.
    pub fn owner(&self, key: &str) -> Option<usize> {
        let h = hash(key);
        let at = self.points.partition_point(|(p, _)| *p < h);
        self.points.get(at).or(self.points.first()).map(|(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_keys_and_moves_few_when_a_node_leaves() {
        let three = Ring::new(&["fe", "be1", "be2"]);
        let two = Ring::new(&["fe", "be1"]);
        let mut per_node = [0usize; 3];
        let mut moved = 0;
        for i in 0..3000 {
            let key = format!("obj-{i}");
            let owner = three.owner(&key).unwrap();
            per_node[owner] += 1;
            if owner != 2 && two.owner(&key) != Some(owner) {
                moved += 1;
            }
        }
        assert!(per_node.iter().all(|n| *n > 600), "{per_node:?}");
        assert_eq!(moved, 0, "keys of surviving nodes must stay put");
        assert_eq!(Ring::new::<&str>(&[]).owner("x"), None);
    }
}
