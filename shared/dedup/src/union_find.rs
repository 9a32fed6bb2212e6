//! Union-find (disjoint sets) with path halving and union by size.

#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        UnionFind { parent: (0..n as u32).collect(), size: vec![1; n] }
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x
    }

    /// Joins the sets of `a` and `b`; returns whether they were separate.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        true
    }

    /// Component members, each list sorted, components ordered by their smallest member:
    /// independent of the order the unions were made in.
    pub fn components(&mut self) -> Vec<Vec<u32>> {
        let n = self.parent.len();
        let mut by_root: Vec<Vec<u32>> = vec![Vec::new(); n];
        for x in 0..n as u32 {
            let r = self.find(x);
            by_root[r as usize].push(x);
        }
        let mut comps: Vec<Vec<u32>> = by_root.into_iter().filter(|c| !c.is_empty()).collect();
        comps.sort_by_key(|c| c[0]);
        comps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_do_not_depend_on_union_order() {
        let edges = [(0, 3), (3, 5), (1, 2), (6, 5)];
        let mut a = UnionFind::new(8);
        for &(x, y) in &edges {
            a.union(x, y);
        }
        let mut b = UnionFind::new(8);
        for &(x, y) in edges.iter().rev() {
            b.union(y, x);
        }
        assert_eq!(a.components(), b.components());
        assert_eq!(a.components(), vec![vec![0, 3, 5, 6], vec![1, 2], vec![4], vec![7]]);
    }
}
