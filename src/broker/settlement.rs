//! Which frames settle a channel's deliveries: pure bookkeeping, no I/O.
//!
//! Why it needs care: an AMQP channel closes with `PRECONDITION_FAILED - unknown
//! delivery tag` when a frame names a tag already settled, and every channel teardown
//! returns all of its unacked deliveries with their delivery count raised, so one
//! wrong frame burns a delivery attempt of every message the channel held. And a
//! multiple-ack at tag `t` settles *every* unacked delivery of the channel up to `t`:
//! one that covers a task still running, or one to be handed back, loses it.
//!
//! Why multiple-acks anyway: one frame for a run of deliveries instead of one each
//! cut the worker's CPU per task by 30 % and the broker's by 10-30 % in a burst
//! (BENCHMARKS.md, "Settling"). [`Tags`] makes them exact for a stage that finishes
//! deliveries out of order (the worker): it knows which tags the channel has handed
//! to us (they count from 1, one per delivery) and which of those are still open, so
//! a multiple-ack only ever covers deliveries settled by then. Tags not yet taken
//! from lapin (another consumer's on the same channel, whose deliveries can reach us
//! later than a higher tag of this one) count as open.

use std::collections::BTreeSet;

/// What happens to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done with it.
    Ack,
    /// Return it to its queue (for another consumer, or later).
    HandBack,
    /// Publish it to the dead-letter exchange with this reason, then ack it.
    DeadLetter(String),
}

/// One settling frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Ack { tag: u64, multiple: bool },
    Requeue { tag: u64 },
}

/// The delivery tags of one channel: which were handed to us, which are still open.
#[derive(Debug, Default)]
pub struct Tags {
    /// Every tag up to this one has been handed to us.
    received_through: u64,
    /// Tags handed to us above `received_through` (a gap below them is still in
    /// another consumer's buffer).
    ahead: BTreeSet<u64>,
    /// Handed to us and not settled yet.
    open: BTreeSet<u64>,
}

impl Tags {
    /// Records a delivery handed to us; call it before anyone can settle it.
    pub fn received(&mut self, tag: u64) {
        self.open.insert(tag);
        if tag != self.received_through + 1 {
            if tag > self.received_through {
                self.ahead.insert(tag);
            }
            return;
        }
        self.received_through = tag;
        while self.ahead.remove(&(self.received_through + 1)) {
            self.received_through += 1;
        }
    }

    /// Settles `batch` (tag, verdict; each tag once) and returns its frames, to be
    /// sent in order before any other settling frame of the channel: hand-backs
    /// first, then one multiple-ack for the acks below the lowest tag still open (so
    /// it covers only deliveries settled by then), then the other acks one by one.
    pub fn settle(&mut self, batch: &[(u64, &Verdict)]) -> Vec<Frame> {
        for (tag, _) in batch {
            self.open.remove(tag);
        }
        plan(batch, self.lowest_open())
    }

    /// The lowest tag not settled: open, or not handed to us yet.
    fn lowest_open(&self) -> u64 {
        let unreceived = self.received_through + 1;
        self.open
            .first()
            .map_or(unreceived, |t| (*t).min(unreceived))
    }
}

/// The frames for `batch`, with every tag below `open_from` settled once they are
/// sent (so acks below it may be one multiple-ack).
fn plan(batch: &[(u64, &Verdict)], open_from: u64) -> Vec<Frame> {
    let mut frames: Vec<Frame> = batch
        .iter()
        .filter(|(_, v)| **v == Verdict::HandBack)
        .map(|(tag, _)| Frame::Requeue { tag: *tag })
        .collect();
    let acked = batch.iter().filter(|(_, v)| **v != Verdict::HandBack);
    let (covered, single): (Vec<u64>, Vec<u64>) =
        acked.map(|(tag, _)| *tag).partition(|t| *t < open_from);
    if let Some(tag) = covered.iter().max() {
        frames.push(Frame::Ack {
            tag: *tag,
            multiple: covered.len() > 1,
        });
    }
    frames.extend(single.into_iter().map(|tag| Frame::Ack {
        tag,
        multiple: false,
    }));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The broker's side: the unacked deliveries of a channel. Fails on a frame naming
    /// a tag that is not outstanding; returns what each frame settled.
    #[derive(Default)]
    struct Broker {
        outstanding: BTreeSet<u64>,
        settled: BTreeMap<u64, &'static str>,
    }

    impl Broker {
        fn deliver(&mut self, tag: u64) {
            self.outstanding.insert(tag);
        }

        fn apply(&mut self, frames: &[Frame]) {
            for f in frames {
                let (tag, multiple, what) = match *f {
                    Frame::Ack { tag, multiple } => (tag, multiple, "ack"),
                    Frame::Requeue { tag } => (tag, false, "requeue"),
                };
                assert!(
                    self.outstanding.contains(&tag),
                    "unknown delivery tag {tag} in {frames:?}"
                );
                let hit: Vec<u64> = self
                    .outstanding
                    .iter()
                    .copied()
                    .filter(|t| if multiple { *t <= tag } else { *t == tag })
                    .collect();
                for t in hit {
                    self.outstanding.remove(&t);
                    assert!(
                        self.settled.insert(t, what).is_none(),
                        "tag {t} settled twice"
                    );
                }
            }
        }
    }

    fn verdicts(pattern: &str) -> Vec<Verdict> {
        pattern
            .chars()
            .map(|c| match c {
                'a' => Verdict::Ack,
                'h' => Verdict::HandBack,
                _ => Verdict::DeadLetter("poison".into()),
            })
            .collect()
    }

    fn want(v: &Verdict) -> &'static str {
        if *v == Verdict::HandBack {
            "requeue"
        } else {
            "ack"
        }
    }

    #[test]
    fn every_mix_settles_each_tag_exactly_once() {
        // Every pattern of three verdicts over four deliveries, with and without an
        // older delivery still open below them.
        for n in 0..81u32 {
            let pattern: String = (0..4)
                .map(|i| ['a', 'h', 'd'][(n / 3u32.pow(i) % 3) as usize])
                .collect();
            let v = verdicts(&pattern);
            for first in [1u64, 2] {
                let (mut tags, mut broker) = (Tags::default(), Broker::default());
                for tag in first..first + 5 {
                    tags.received(tag);
                    broker.deliver(tag);
                }
                let batch: Vec<(u64, &Verdict)> = (first + 1..first + 5).zip(&v).collect();
                broker.apply(&tags.settle(&batch));
                for (tag, verdict) in &batch {
                    assert_eq!(broker.settled[tag], want(verdict), "{pattern} tag {tag}");
                }
                assert!(
                    broker.outstanding.contains(&first),
                    "{pattern}: the older open delivery {first} was settled too"
                );
            }
        }
    }

    #[test]
    fn a_settled_run_from_the_lowest_open_tag_is_one_multiple_ack() {
        let mut tags = Tags::default();
        (1..=4).for_each(|t| tags.received(t));
        let a = Verdict::Ack;
        // 3 and 4 finish first: 1 and 2 are still running, so one frame each.
        assert_eq!(
            tags.settle(&[(3, &a), (4, &a)]),
            vec![
                Frame::Ack {
                    tag: 3,
                    multiple: false
                },
                Frame::Ack {
                    tag: 4,
                    multiple: false
                }
            ]
        );
        // Then 1 and 2: nothing below or between is open any more.
        assert_eq!(
            tags.settle(&[(2, &a), (1, &a)]),
            vec![Frame::Ack {
                tag: 2,
                multiple: true
            }]
        );
    }

    #[test]
    fn a_hand_back_goes_before_the_multiple_ack_that_passes_it() {
        let mut tags = Tags::default();
        (1..=3).for_each(|t| tags.received(t));
        let v = verdicts("haa");
        let batch: Vec<(u64, &Verdict)> = (1..=3).zip(&v).collect();
        assert_eq!(
            tags.settle(&batch),
            vec![
                Frame::Requeue { tag: 1 },
                Frame::Ack {
                    tag: 3,
                    multiple: true
                }
            ]
        );
    }

    #[test]
    fn a_tag_not_yet_taken_from_lapin_is_never_covered() {
        // Two consumers on one channel: tag 2 is still in the other one's buffer.
        let mut tags = Tags::default();
        tags.received(1);
        tags.received(3);
        let a = Verdict::Ack;
        assert_eq!(
            tags.settle(&[(1, &a), (3, &a)]),
            vec![
                Frame::Ack {
                    tag: 1,
                    multiple: false
                },
                Frame::Ack {
                    tag: 3,
                    multiple: false
                }
            ]
        );
        tags.received(2);
        tags.received(4);
        tags.received(5);
        assert_eq!(
            tags.settle(&[(4, &a), (2, &a), (5, &a)]),
            vec![Frame::Ack {
                tag: 5,
                multiple: true
            }]
        );
    }

    /// A small deterministic generator (xorshift64*), so the interleavings below are
    /// the same on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    #[test]
    fn random_interleavings_settle_each_delivery_once_with_its_own_verdict() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (mut tags, mut broker) = (Tags::default(), Broker::default());
            // The broker delivers 1..=n in order, alternating at random between two
            // consumers; we take from either buffer in any order.
            let n = 40;
            let mut buffers: [Vec<u64>; 2] = [vec![], vec![]];
            for tag in 1..=n {
                broker.deliver(tag);
                buffers[rng.below(2) as usize].push(tag);
            }
            buffers.iter_mut().for_each(|b| b.reverse());
            let mut held: Vec<u64> = vec![];
            let mut decided: BTreeMap<u64, Verdict> = BTreeMap::new();
            while decided.len() < n as usize {
                let take = rng.below(3) != 0 && buffers.iter().any(|b| !b.is_empty());
                if take {
                    let b = rng.below(2) as usize;
                    if let Some(tag) = buffers[b].pop() {
                        tags.received(tag);
                        held.push(tag);
                    }
                    continue;
                }
                // Settle a random part of what is held, each with a random verdict.
                let mut batch = vec![];
                held.retain(|tag| {
                    let settle = rng.below(2) == 0;
                    if settle {
                        batch.push(*tag);
                    }
                    !settle
                });
                let v: Vec<Verdict> = batch
                    .iter()
                    .map(|_| verdicts(["a", "h", "d"][rng.below(3) as usize])[0].clone())
                    .collect();
                let tagged: Vec<(u64, &Verdict)> = batch.iter().copied().zip(&v).collect();
                broker.apply(&tags.settle(&tagged));
                for (tag, verdict) in tagged {
                    decided.insert(tag, verdict.clone());
                }
                for tag in &held {
                    assert!(
                        broker.outstanding.contains(tag),
                        "seed {seed}: held {tag} settled"
                    );
                }
                for b in &buffers {
                    for tag in b {
                        assert!(
                            broker.outstanding.contains(tag),
                            "seed {seed}: buffered {tag} settled"
                        );
                    }
                }
            }
            assert!(broker.outstanding.is_empty(), "seed {seed}");
            for (tag, verdict) in &decided {
                assert_eq!(broker.settled[tag], want(verdict), "seed {seed} tag {tag}");
            }
        }
    }
}
