//! Attempt fences that only grow, across leadership terms.
//!
//! Every attempt carries a fence; a fence is `term << SEQ_BITS | seq`, where `term` is the
//! leadership term **number** (a counter each new leader increments in the store, see
//! `swarm_store::RunRepo::next_term`) and `seq` counts the term's attempts from 1. So every
//! fence of a term exceeds every fence of earlier terms, and within a term fences are handed
//! out in order. The term is deliberately not etcd's revision: revisions pass 2³² on a busy
//! cluster within weeks, and shifting one left by 32 bits would silently drop its high bits.
//!
//! Split: 24 bits of term (16.7 million elections) and 40 bits of sequence (1.1 × 10¹²
//! attempts per term: 127 days at 100,000 attempts/s). A term whose sequence runs out ends:
//! [`FenceSeq::next`] returns `None` and the leader steps down, so the next term starts above.

use crate::Fence;

/// Bits of a fence that count attempts within a term.
pub const SEQ_BITS: u32 = 40;
/// The largest term number a fence can carry.
pub const MAX_TERM: u64 = (1 << (64 - SEQ_BITS)) - 1;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// A term number that does not fit a fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("leadership term {0} exceeds the largest term a fence can carry ({MAX_TERM})")]
pub struct TermTooLarge(pub u64);

/// The fences of one term, handed out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceSeq {
    next: u64,
    last: u64,
}

/// The next fence, or `None` once the term's sequence is used up.
impl Iterator for FenceSeq {
    type Item = Fence;

    fn next(&mut self) -> Option<Fence> {
        if self.next > self.last {
            return None;
        }
        let fence = Fence(self.next);
        self.next += 1;
        Some(fence)
    }
}

/// The fences of term 0: an unfenced, single coordinator.
impl Default for FenceSeq {
    fn default() -> Self {
        Self { next: 1, last: SEQ_MASK }
    }
}

impl FenceSeq {
    /// The fences of term `term` (0: an unfenced, single coordinator).
    pub fn for_term(term: u64) -> Result<Self, TermTooLarge> {
        if term > MAX_TERM {
            return Err(TermTooLarge(term));
        }
        let base = term << SEQ_BITS;
        Ok(Self { next: base + 1, last: base | SEQ_MASK })
    }

    /// The term this sequence hands out fences for.
    pub fn term(&self) -> u64 {
        self.last >> SEQ_BITS
    }

    /// True when `fence` is of this term and was handed out already.
    pub fn handed_out(&self, fence: Fence) -> bool {
        Self::term_of(fence) == self.term() && fence.0 < self.next
    }

    /// The term a fence was handed out in.
    pub fn term_of(fence: Fence) -> u64 {
        fence.0 >> SEQ_BITS
    }

    /// The first term number whose fences exceed every fence of the earlier scheme, which
    /// handed out `revision << 32 | seq` with the leader key's revision as the term. A store
    /// that has no term counter yet starts from this, given the current leader's revision.
    /// (That scheme's fences near and past revision 2³² filled, then overflowed, all 64 bits,
    /// so no term is above them; those revisions map to the largest term.)
    pub fn first_term_after_revision_scheme(revision: u64) -> u64 {
        ((revision >> (SEQ_BITS - 32)) + 1).min(MAX_TERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_grow_within_and_across_terms() {
        let mut t1 = FenceSeq::for_term(1).expect("term");
        let a = t1.next().expect("fence");
        let b = t1.next().expect("fence");
        assert!(b > a);
        let mut t2 = FenceSeq::for_term(2).expect("term");
        let c = t2.next().expect("fence");
        assert!(c > b, "a new term's first fence exceeds the old term's");
        assert_eq!(FenceSeq::term_of(c), 2);
        let mut t0 = FenceSeq::for_term(0).expect("unfenced");
        assert_eq!(t0.next(), Some(Fence(1)));
    }

    #[test]
    fn the_largest_term_works_and_one_more_is_refused() {
        let mut last = FenceSeq::for_term(MAX_TERM).expect("the largest term");
        let f = last.next().expect("fence");
        assert_eq!(FenceSeq::term_of(f), MAX_TERM);
        assert_eq!(FenceSeq::for_term(MAX_TERM + 1), Err(TermTooLarge(MAX_TERM + 1)));
        assert_eq!(FenceSeq::for_term(u64::MAX), Err(TermTooLarge(u64::MAX)));
    }

    #[test]
    fn a_used_up_term_says_so_instead_of_running_into_the_next() {
        let mut t = FenceSeq::for_term(7).expect("term");
        t.next = t.last;
        let last = t.next().expect("the last fence");
        assert_eq!(FenceSeq::term_of(last), 7);
        assert_eq!(t.next(), None);
        assert_eq!(t.next(), None);
        let next_term = FenceSeq::for_term(8).expect("term").next().expect("fence");
        assert!(next_term > last);
    }

    #[test]
    fn terms_after_the_revision_scheme_start_above_its_fences_across_the_2_pow_32_boundary() {
        // The old scheme: fence = revision << 32 | seq, seq < 2^32, for revisions < 2^32.
        for revision in [1u64, 2, 255, 256, 257, 65_537, (1 << 31) + 3, (1 << 32) - 257] {
            let old_max = (revision << 32) | 0xFFFF_FFFF;
            let term = FenceSeq::first_term_after_revision_scheme(revision);
            let first = FenceSeq::for_term(term).expect("fits").next().expect("fence");
            assert!(first.0 > old_max, "revision {revision}: {} ≤ {old_max}", first.0);
        }
        // Revisions at and past 2^32 (the old scheme's wrap point) still give a valid term,
        // and later revisions never give a smaller one.
        let mut prev = 0;
        for revision in [(1u64 << 32) - 1, 1 << 32, (1 << 32) + 1, 1 << 40, (1 << 55) - 1] {
            let term = FenceSeq::first_term_after_revision_scheme(revision);
            assert!(term >= prev);
            assert!(FenceSeq::for_term(term).is_ok(), "revision {revision} → term {term}");
            prev = term;
        }
    }

    #[test]
    fn handed_out_tells_a_fence_of_this_term_already_given_from_one_never_given() {
        let mut seq = FenceSeq::for_term(3).expect("term");
        let first = seq.next().expect("fence");
        let second = seq.next().expect("fence");
        assert!(seq.handed_out(first) && seq.handed_out(second));
        assert!(!seq.handed_out(Fence(second.0 + 1)), "not yet given");
        let earlier = FenceSeq::for_term(2).expect("term").next().expect("fence");
        assert!(!seq.handed_out(earlier), "another term's");
        assert!(!seq.handed_out(Fence(u64::MAX)));
    }
}
