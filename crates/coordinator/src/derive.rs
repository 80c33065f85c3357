//! Per-round derivations every participant computes identically: committee, data assignment,
//! quorum, verification targets, the apply set and health verdicts. See docs/protocol.md.

use crate::bloom::Bloom;
use crate::config::Config;
use crate::error::{CoreError, CoreResult};
use crate::murmur::murmur3_x64_128;
use crate::rng::{domain, Prng};
use crate::state::{bit_get, Round, RoundKind, State};
use crate::{MAX_CLIENTS, MAX_WITNESSES, ROUND_RING};

/// Role bit: trains an assigned batch.
pub const ROLE_TRAINER: u8 = 1;
/// Role bit: witnesses the previous round's results.
pub const ROLE_WITNESS: u8 = 2;
/// Role bit: recomputes one of the previous round's results.
pub const ROLE_VERIFIER: u8 = 4;

/// The shuffled committee of a round: `slots[p]` is the client slot at position `p`.
/// Positions `0..witnesses` are witnesses; `trainers()..n` are verifiers; `0..trainers()` train.
pub struct Committee {
    /// Members in the round.
    pub n: u16,
    /// Witness committee size.
    pub witnesses: u16,
    /// Verifiers.
    pub verifiers: u16,
    /// Shuffled slots (first `n` used).
    pub slots: [u16; MAX_CLIENTS],
}

/// Witnesses for `n` members: `min(witnesses_per_round, n)`.
pub fn witness_count(cfg: &Config, n: u16) -> u16 {
    cfg.witnesses_per_round.min(n)
}

/// Verifiers for `n` members: `ceil(n * verification_pct / 100)`, at most `n - 1`.
pub fn verifier_count(cfg: &Config, n: u16) -> u16 {
    let v = (n as u32 * cfg.verification_pct as u32).div_ceil(100) as u16;
    v.min(n.saturating_sub(1))
}

impl Committee {
    /// Fisher–Yates shuffle of the round's members (in slot order) driven by
    /// `Prng(seed, COMMITTEE)`: for i = n-1 down to 1, swap i with `below(i + 1)`.
    #[inline(never)]
    pub fn compute(round: &Round) -> Committee {
        let mut c = Committee {
            n: 0,
            witnesses: 0,
            verifiers: 0,
            slots: [0; MAX_CLIENTS],
        };
        let mut n = 0usize;
        for slot in 0..MAX_CLIENTS {
            if bit_get(&round.members, slot) {
                c.slots[n] = slot as u16;
                n += 1;
            }
        }
        let mut rng = Prng::new(&round.seed, domain::COMMITTEE);
        let mut i = n;
        while i > 1 {
            i -= 1;
            let j = rng.below(i as u64 + 1) as usize;
            c.slots.swap(i, j);
        }
        c.n = n as u16;
        c.witnesses = round.witness_count.min(c.n).min(MAX_WITNESSES as u16);
        c.verifiers = round.verifier_count.min(c.n.saturating_sub(1));
        c
    }

    /// Number of trainers (`n - verifiers`).
    pub fn trainers(&self) -> u16 {
        self.n - self.verifiers
    }

    /// Slot at a position.
    pub fn slot_at(&self, pos: u16) -> Option<usize> {
        if pos < self.n {
            Some(self.slots[pos as usize] as usize)
        } else {
            None
        }
    }

    /// Position of a slot (None if not a member of the round).
    pub fn position_of(&self, slot: usize) -> Option<u16> {
        self.slots[..self.n as usize]
            .iter()
            .position(|s| *s as usize == slot)
            .map(|p| p as u16)
    }

    /// Role bits of a position.
    pub fn roles_at(&self, pos: u16) -> u8 {
        let mut r = 0;
        if pos >= self.n {
            return 0;
        }
        if pos < self.witnesses {
            r |= ROLE_WITNESS;
        }
        if pos < self.trainers() {
            r |= ROLE_TRAINER;
        } else {
            r |= ROLE_VERIFIER;
        }
        r
    }
}

/// The data a trainer position trains: `[start, end)` with
/// `start = data_index + floor(p * B / T)`, `end = data_index + floor((p + 1) * B / T)`.
/// Every sample of the round's batch goes to exactly one trainer. `None` for a non-trainer
/// position or an empty share (B < T).
pub fn assignment(round: &Round, trainers: u16, pos: u16) -> Option<(u64, u64)> {
    if pos >= trainers || round.kind != RoundKind::Data as u8 {
        return None;
    }
    let b = round.batch_size as u64;
    let t = trainers as u64;
    let lo = round.data_index.checked_add(pos as u64 * b / t)?;
    let hi = round.data_index.checked_add((pos as u64 + 1) * b / t)?;
    if hi > lo {
        Some((lo, hi))
    } else {
        None
    }
}

/// The Bloom salt of the witness at committee `position` of `round` (the round whose witnesses
/// submit): the low 32 bits of `murmur3(seed ‖ position_le16, 0).h1`.
pub fn witness_salt(round: &Round, position: u16) -> u32 {
    let mut buf = [0u8; 34];
    buf[..32].copy_from_slice(&round.seed);
    buf[32..].copy_from_slice(&position.to_le_bytes());
    murmur3_x64_128(&buf, 0).0 as u32
}

/// The two filters the witness at `position` of round `height` submits: `results` holds the
/// commitments it received, `trainers` the wallets of the trainer slots that sent them, both
/// salted with `witness_salt`. Built here, next to the rules that read them, so that no caller
/// hashes bits of its own (docs/protocol.md, "Bloom filters"). A trainer slot out of range is
/// `IndexOutOfRange`; a round not in the ring is `RoundUnavailable`.
pub fn witness_filters<'a>(
    state: &State,
    height: u32,
    position: u16,
    results: impl IntoIterator<Item = &'a [u8; 32]>,
    trainers: impl IntoIterator<Item = usize>,
) -> CoreResult<(Bloom, Bloom)> {
    let salt = witness_salt(state.round(height)?, position);
    let mut results_bloom = Bloom::new();
    for commitment in results {
        results_bloom.add_salted(commitment, salt);
    }
    let mut trainers_bloom = Bloom::new();
    for slot in trainers {
        trainers_bloom.add_salted(&state.client(slot)?.wallet, salt);
    }
    Ok((results_bloom, trainers_bloom))
}

/// Witness quorum of a round.
pub fn quorum(cfg: &Config, round: &Round) -> u16 {
    Config::quorum_for(cfg.witness_quorum_pct, round.witness_count)
}

/// A round together with its committee (keeps argument lists short for SBF's 5-register ABI).
pub struct Seated<'a> {
    /// The round.
    pub round: &'a Round,
    /// Its committee.
    pub committee: &'a Committee,
}

/// The target (a slot that trained in `prev`) of the verifier at `pos` of `cur`.
/// `j = pos - T_cur`; target position in `prev` is `(offset + j / verifiers_per_target) mod T_prev`
/// with `offset = Prng(cur.seed, VERIFY).below(T_prev)`. Void (None) when the target would be
/// the verifier itself or had no data.
#[inline(never)]
pub fn verification_target(
    cfg: &Config,
    prev: &Seated<'_>,
    cur: &Seated<'_>,
    pos: u16,
) -> Option<usize> {
    let (prev_c, cur_c) = (prev.committee, cur.committee);
    let (prev, cur) = (prev.round, cur.round);
    if cur_c.roles_at(pos) & ROLE_VERIFIER == 0 || prev.kind != RoundKind::Data as u8 {
        return None;
    }
    let t_prev = prev_c.trainers();
    if t_prev == 0 {
        return None;
    }
    let j = (pos - cur_c.trainers()) as u64;
    let offset = Prng::new(&cur.seed, domain::VERIFY).below(t_prev as u64);
    let k = cfg.verifiers_per_target.max(1) as u64;
    let tpos = ((offset + j / k) % t_prev as u64) as u16;
    assignment(prev, t_prev, tpos)?;
    let target = prev_c.slot_at(tpos)?;
    let me = cur_c.slot_at(pos)?;
    if target == me {
        None
    } else {
        Some(target)
    }
}

/// A result a client holds for a data round, and the apply-set verdict on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// First sample of the batch the result claims.
    pub batch_start: u64,
    /// Slot of the trainer.
    pub trainer: u16,
    /// Result commitment (sha256 over run id, step, batch id, payload).
    pub commitment: [u8; 32],
    /// Output: witnesses whose result filter contains the commitment.
    pub votes: u16,
    /// Output: part of the apply set.
    pub accepted: bool,
}

impl Candidate {
    /// A candidate before evaluation.
    pub fn new(batch_start: u64, trainer: u16, commitment: [u8; 32]) -> Candidate {
        Candidate {
            batch_start,
            trainer,
            commitment,
            votes: 0,
            accepted: false,
        }
    }
}

/// Decide the apply set of data round `height` from round `height + 1`'s witnesses (which must
/// be final and have reached quorum). A candidate is accepted when it is the assigned batch of a
/// trainer of that round, the trainer was not ejected in either round, and a strict majority of
/// the S submitted result filters contain its commitment (each filter read with its witness's
/// salt). Per batch one result survives: most
/// votes, then the smallest commitment. The accepted candidates are moved to the front of `cands`
/// in batch order; the count is returned. The rest of the slice holds the rejected ones with
/// their vote counts.
#[inline(never)]
pub fn apply_set(state: &State, height: u32, cands: &mut [Candidate]) -> CoreResult<usize> {
    let r = state.round(height)?;
    if r.kind != RoundKind::Data as u8 {
        return Err(CoreError::RoundUnavailable);
    }
    let w = state.round_final(height.checked_add(1).ok_or(CoreError::IndexOutOfRange)?)?;
    let subs = w.submissions();
    let s = subs.len() as u32;
    if s < quorum(&state.config, w) as u32 {
        return Err(CoreError::NotEnoughWitnesses);
    }
    if !any_trainer_attested(state, r, w) {
        return Err(CoreError::NothingWitnessed);
    }
    let c = Committee::compute(r);
    let t = c.trainers();
    for cand in cands.iter_mut() {
        let slot = cand.trainer as usize;
        let assigned = c
            .position_of(slot)
            .and_then(|p| assignment(r, t, p))
            .is_some_and(|(lo, _)| lo == cand.batch_start);
        let clean = !bit_get(&r.ejected, slot) && !bit_get(&w.ejected, slot);
        let votes = subs
            .iter()
            .filter(|sub| {
                sub.results
                    .contains_salted(&cand.commitment, witness_salt(w, sub.position))
            })
            .count() as u32;
        cand.votes = votes as u16;
        cand.accepted = assigned && clean && votes * 2 > s;
    }
    cands.sort_unstable_by(|a, b| {
        b.accepted
            .cmp(&a.accepted)
            .then(a.batch_start.cmp(&b.batch_start))
            .then(b.votes.cmp(&a.votes))
            .then(a.commitment.cmp(&b.commitment))
            .then(a.trainer.cmp(&b.trainer))
    });
    let accepted = cands.iter().take_while(|c| c.accepted).count();
    // Keep the first (best) accepted candidate of each batch.
    let mut kept = 0usize;
    for i in 0..accepted {
        let dup = kept > 0 && cands[kept - 1].batch_start == cands[i].batch_start;
        if dup {
            cands[i].accepted = false;
        } else {
            cands.swap(kept, i);
            kept += 1;
        }
    }
    // Entries from `kept` on are the rejected candidates (outvoted duplicates included).
    Ok(kept)
}

/// Trainer positions `any_trainer_attested` examines: bounds its cost on chain (each check is one
/// salted murmur3 per witness filter) while a round whose results travelled is found at the
/// first position almost always (positions are a fresh shuffle every round).
pub const ATTEST_SCAN: u16 = 8;

/// Whether data round `r` exchanged results: one of its first `ATTEST_SCAN` trainers (committee
/// order) has its wallet in a strict majority of the trainer filters of the following round `w`.
/// A round without is requeued and not counted as a step (`end_round`), and `apply_set` refuses
/// it with `NothingWitnessed`, so every client skips it alike (docs/protocol.md, "Empty rounds").
/// Filters with no bit set (a witness that received nothing) are counted without hashing, so a
/// round nobody received anything from costs no hash at all.
pub fn any_trainer_attested(state: &State, r: &Round, w: &Round) -> bool {
    let subs = w.submissions();
    let s = subs.len() as u32;
    let nonempty = subs.iter().filter(|sub| !sub.trainers.is_empty()).count() as u32;
    if nonempty * 2 <= s {
        return false;
    }
    let c = Committee::compute(r);
    let t = c.trainers();
    (0..t.min(ATTEST_SCAN)).any(|p| {
        let (Some(slot), Some(_)) = (c.slot_at(p), assignment(r, t, p)) else {
            return false;
        };
        let Ok(client) = state.client(slot) else {
            return false;
        };
        let (mut present, mut seen) = (0u32, 0u32);
        for sub in subs.iter().filter(|sub| !sub.trainers.is_empty()) {
            if (present + (nonempty - seen)) * 2 <= s {
                return false;
            }
            seen += 1;
            if sub
                .trainers
                .contains_salted(&client.wallet, witness_salt(w, sub.position))
            {
                present += 1;
                if present * 2 > s {
                    return true;
                }
            }
        }
        false
    })
}

/// How many of round `w`'s witness submissions hold `wallet` in their trainer filter.
fn trainer_presence(w: &Round, wallet: &[u8; 32]) -> u32 {
    w.submissions()
        .iter()
        .filter(|sub| {
            sub.trainers
                .contains_salted(wallet, witness_salt(w, sub.position))
        })
        .count() as u32
}

/// Whether `slot`, a trainer of data round `height`, was attested: its wallet is in a strict
/// majority of the trainer filters of round `height + 1` (final, with quorum). A client that
/// holds no result of an attested trainer lacks something the others may apply: it must fetch it
/// rather than apply a smaller set (it would silently diverge). Client-side only, not on chain.
pub fn trainer_attested(state: &State, height: u32, slot: usize) -> CoreResult<bool> {
    let r = state.round(height)?;
    if r.kind != RoundKind::Data as u8 {
        return Err(CoreError::RoundUnavailable);
    }
    let w = state.round_final(height.checked_add(1).ok_or(CoreError::IndexOutOfRange)?)?;
    let s = w.submissions().len() as u32;
    if s < quorum(&state.config, w) as u32 {
        return Err(CoreError::NotEnoughWitnesses);
    }
    let client = state.client(slot)?;
    Ok(trainer_presence(w, &client.wallet) * 2 > s)
}

/// The last data round of the epoch that just ended whose results were applied (its span not
/// requeued and its witness round at quorum: the rounds `steps_done` counted), or `None` when
/// none of the epoch's rounds still in the ring was. Only between epochs (waiting, warmup,
/// paused, finished): the ring then still holds the ended epoch's last rounds, until the next
/// epoch's first round starts. A client compares it with the rounds it applied: one that missed
/// the last apply (it saw neither the last round nor the cooldown, or its apply was still under
/// way when the epoch ended) holds a model the others do not, and must not use or serve it as
/// the run's. Client-side only, not on chain.
pub fn last_applied_of_ended_epoch(state: &State) -> CoreResult<Option<u32>> {
    if state.in_rounds() {
        return Err(CoreError::WrongPhase);
    }
    let Some(epoch) = state.progress.epoch.checked_sub(1) else {
        return Ok(None);
    };
    let ring = &state.rounds;
    let mut last = None;
    for r in ring.iter() {
        if r.epoch != epoch || r.kind != RoundKind::Data as u8 || r.requeued != 0 {
            continue;
        }
        let w = &ring[(r.height as usize + 1) % ROUND_RING];
        let witnessed = w.epoch == epoch
            && r.height.checked_add(1) == Some(w.height)
            && w.kind != RoundKind::Empty as u8
            && w.submissions_len >= quorum(&state.config, w);
        if witnessed {
            last = last.max(Some(r.height));
        }
    }
    Ok(last)
}

/// Why a health check succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unhealthy {
    /// A trainer of round r whose wallet a strict majority of round r+1's trainer filters lack.
    MissingResult,
    /// A witness of round r+1 that did not submit although a quorum of its committee did.
    MissedWitness,
}

/// The health verdict on `target` for data round `height` (judged by round `height + 1`, which
/// must be final and have reached quorum). `Ok(None)` means healthy.
#[inline(never)]
pub fn health_verdict(state: &State, height: u32, target: usize) -> CoreResult<Option<Unhealthy>> {
    let r = state.round(height)?;
    let w = state.round_final(height.checked_add(1).ok_or(CoreError::IndexOutOfRange)?)?;
    let client = state.client(target)?;
    let subs = w.submissions();
    let s = subs.len() as u32;
    if s < quorum(&state.config, w) as u32 {
        return Err(CoreError::NotEnoughWitnesses);
    }
    let c = Committee::compute(r);
    let trained = c
        .position_of(target)
        .and_then(|p| assignment(r, c.trainers(), p))
        .is_some();
    if trained {
        let present = trainer_presence(w, &client.wallet);
        if (s - present) * 2 > s {
            return Ok(Some(Unhealthy::MissingResult));
        }
    }
    let cw = Committee::compute(w);
    if let Some(p) = cw.position_of(target) {
        if p < cw.witnesses && w.witnessed & (1u32 << p) == 0 {
            return Ok(Some(Unhealthy::MissedWitness));
        }
    }
    Ok(None)
}
