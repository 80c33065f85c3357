//! State transitions. Each validates fully before it mutates, so an `Err` leaves the state
//! untouched; each successful change bumps `nonce` and sets `updated_at`.

use crate::config::Config;
use crate::derive::{
    any_trainer_attested, assignment, health_verdict, quorum, verification_target, verifier_count,
    witness_count, Committee, Seated, Unhealthy, ROLE_VERIFIER,
};
use crate::error::{CoreError, CoreResult};
use crate::rng::round_seed;
use crate::state::{
    bit_get, bit_set, Client, ClientState, ModelKind, ModelRef, Phase, Round, RoundKind, Span,
    State, WitnessInput,
};
use crate::timing;
use crate::{
    MAX_BANNED, MAX_CLIENTS, MAX_WITNESSES, REQUEUE_CAP, ROUND_RING, STALL_ROUNDS, STATE_VERSION,
};
use bytemuck::Zeroable;

/// What a tick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// Nothing was due.
    Idle,
    /// Bookkeeping changed without a phase change (e.g. the min-clients timer started).
    Updated,
    /// The phase (or round) changed.
    Transitioned,
}

fn elapsed(now: i64, since: i64, secs: u32) -> bool {
    now.saturating_sub(since) >= secs as i64
}

impl State {
    /// Initialize a (zeroed or garbage) account in place: validates config and model, and starts
    /// `Paused` so the operator can review before `resume`.
    #[inline(never)]
    pub fn init(
        &mut self,
        run_id: &[u8; 32],
        config: &Config,
        model: &ModelRef,
        now: i64,
    ) -> CoreResult<()> {
        config.validate()?;
        model.validate()?;
        bytemuck::fill_zeroes(core::slice::from_mut(self));
        self.version = STATE_VERSION;
        self.phase = Phase::Paused as u8;
        self.run_id = *run_id;
        self.created_at = now;
        self.phase_started_at = now;
        self.updated_at = now;
        self.config = *config;
        self.model = *model;
        self.nonce = 1;
        Ok(())
    }

    fn touch(&mut self, now: i64) {
        self.nonce = self.nonce.wrapping_add(1);
        self.updated_at = now;
    }

    fn set_phase(&mut self, p: Phase, now: i64) {
        self.phase = p as u8;
        self.phase_started_at = now;
    }

    /// The train window of round `r` (rounds stored before adaptive timing have none: the max).
    pub fn train_secs_of(&self, r: &Round) -> u32 {
        if r.train_secs == 0 {
            self.config.max_round_train_secs
        } else {
            r.train_secs as u32
        }
    }

    fn healthy_count(&self) -> usize {
        self.count_state(ClientState::Healthy)
    }

    fn slot_of(&self, wallet: &[u8; 32]) -> CoreResult<usize> {
        self.find_client(wallet).ok_or(CoreError::UnknownClient)
    }

    fn healthy_slot(&self, wallet: &[u8; 32]) -> CoreResult<usize> {
        let slot = self.slot_of(wallet)?;
        if !self.clients[slot].is_healthy() {
            return Err(CoreError::NotHealthy);
        }
        Ok(slot)
    }

    // ------------------------------------------------------------------ membership

    /// Register a client. During `WaitingForMembers` and `Paused` it becomes a member at once;
    /// during an epoch it is `Pending` until the next epoch opens. Returns the slot.
    #[inline(never)]
    pub fn join(&mut self, wallet: &[u8; 32], node_key: &[u8; 32], now: i64) -> CoreResult<usize> {
        self.check()?;
        let phase = self.phase()?;
        if phase == Phase::Finished {
            return Err(CoreError::RunFinished);
        }
        if wallet == &[0; 32] || node_key == &[0; 32] {
            return Err(CoreError::InvalidKey);
        }
        if self.is_banned(wallet) {
            return Err(CoreError::Banned);
        }
        if self.clients.iter().any(|c| {
            c.state != ClientState::Empty as u8 && (&c.wallet == wallet || &c.node_key == node_key)
        }) {
            return Err(CoreError::DuplicateClient);
        }
        let taken = self.count_state(ClientState::Healthy) + self.count_state(ClientState::Pending);
        if taken >= self.config.max_clients as usize {
            return Err(CoreError::Full);
        }
        let slot = self
            .clients
            .iter()
            .position(|c| c.state == ClientState::Empty as u8)
            .ok_or(CoreError::Full)?;
        let direct = matches!(phase, Phase::WaitingForMembers | Phase::Paused);
        self.clients[slot] = Client {
            wallet: *wallet,
            node_key: *node_key,
            joined_epoch: if direct {
                self.progress.epoch
            } else {
                self.progress.epoch.saturating_add(1)
            },
            state: if direct {
                ClientState::Healthy as u8
            } else {
                ClientState::Pending as u8
            },
            pad: [0; 3],
        };
        self.touch(now);
        Ok(slot)
    }

    /// Leave the run. Outside an epoch (or while pending) the slot is freed at once; during an
    /// epoch the client is marked `Withdrawn` and its slot is freed when the epoch ends.
    #[inline(never)]
    pub fn withdraw(&mut self, wallet: &[u8; 32], now: i64) -> CoreResult<()> {
        self.check()?;
        let phase = self.phase()?;
        let slot = self.slot_of(wallet)?;
        let state = self.clients[slot]
            .client_state()
            .ok_or(CoreError::InvalidState)?;
        match state {
            ClientState::Ejected => return Err(CoreError::ClientEjected),
            ClientState::Withdrawn => return Err(CoreError::AlreadyWithdrawn),
            _ => {}
        }
        let outside = matches!(
            phase,
            Phase::WaitingForMembers | Phase::Paused | Phase::Finished
        );
        if outside || state == ClientState::Pending {
            self.clients[slot] = Client::zeroed();
        } else {
            self.clients[slot].state = ClientState::Withdrawn as u8;
        }
        self.touch(now);
        Ok(())
    }

    // ------------------------------------------------------------------ tick

    /// Advance on timeouts (at most one phase change per call). `randomness` seeds a new round
    /// when one starts (slot hashes on chain, OS randomness on the server).
    #[inline(never)]
    pub fn tick(&mut self, now: i64, randomness: &[u8; 32]) -> CoreResult<TickOutcome> {
        self.check()?;
        let cfg = self.config;
        let out = match self.phase()? {
            Phase::Uninitialized => return Err(CoreError::InvalidState),
            Phase::Paused | Phase::Finished => TickOutcome::Idle,
            Phase::WaitingForMembers => {
                let healthy = self.healthy_count();
                let was = self.min_reached_at;
                if healthy >= cfg.min_clients as usize {
                    if was == 0 {
                        self.min_reached_at = now.max(1);
                    }
                    if healthy >= cfg.max_clients as usize
                        || elapsed(now, self.min_reached_at, cfg.waiting_extra_secs)
                    {
                        self.start_warmup(now);
                        TickOutcome::Transitioned
                    } else if was == 0 {
                        TickOutcome::Updated
                    } else {
                        TickOutcome::Idle
                    }
                } else if was != 0 {
                    self.min_reached_at = 0;
                    TickOutcome::Updated
                } else {
                    TickOutcome::Idle
                }
            }
            Phase::Warmup => {
                let all_ready = (0..MAX_CLIENTS)
                    .all(|s| !self.clients[s].is_healthy() || bit_get(&self.warmup_ready, s));
                if all_ready || elapsed(now, self.phase_started_at, cfg.warmup_secs) {
                    for s in 0..MAX_CLIENTS {
                        if self.clients[s].is_healthy() && !bit_get(&self.warmup_ready, s) {
                            self.clients[s].state = ClientState::Dropped as u8;
                        }
                    }
                    if self.healthy_count() < cfg.min_clients as usize || self.healthy_count() == 0
                    {
                        self.end_epoch(now, false);
                    } else {
                        self.start_round(0, now, randomness);
                    }
                    TickOutcome::Transitioned
                } else {
                    TickOutcome::Idle
                }
            }
            Phase::RoundTrain => {
                let r = self.round(self.progress.height)?;
                let (quorum_at, started_at, height) = (r.quorum_at, r.started_at, r.height);
                let window = self.train_secs_of(r);
                let early = quorum_at != 0 && elapsed(now, quorum_at, cfg.witness_grace_secs);
                if early || elapsed(now, self.phase_started_at, window) {
                    let to_quorum = (quorum_at != 0)
                        .then(|| quorum_at.saturating_sub(started_at).max(0) as u64);
                    self.train_est_x16 =
                        timing::next_estimate(&cfg, self.train_est_x16, height, window, to_quorum);
                    self.set_phase(Phase::RoundWitness, now);
                    TickOutcome::Transitioned
                } else {
                    TickOutcome::Idle
                }
            }
            Phase::RoundWitness => {
                let r = self.round(self.progress.height)?;
                let all = r.submissions_len >= r.witness_count;
                let window = timing::witness_window(&cfg, self.train_est_x16);
                if all || elapsed(now, self.phase_started_at, window) {
                    self.end_round(now, randomness);
                    TickOutcome::Transitioned
                } else {
                    TickOutcome::Idle
                }
            }
            Phase::Cooldown => {
                if elapsed(now, self.phase_started_at, cfg.cooldown_secs) {
                    self.progress.epochs_completed =
                        self.progress.epochs_completed.saturating_add(1);
                    self.end_epoch(now, false);
                    TickOutcome::Transitioned
                } else {
                    TickOutcome::Idle
                }
            }
        };
        if out != TickOutcome::Idle {
            self.touch(now);
        }
        Ok(out)
    }

    fn start_warmup(&mut self, now: i64) {
        self.warmup_ready = [0; MAX_CLIENTS / 8];
        self.min_reached_at = 0;
        self.checkpointed = 0;
        self.progress.height = 0;
        let left = self
            .config
            .total_steps
            .saturating_sub(self.progress.steps_done);
        self.progress.epoch_rounds = (self.config.rounds_per_epoch as u64).min(left) as u32;
        self.set_phase(Phase::Warmup, now);
    }

    /// Start round `height` (data while `height < epoch_rounds`, else the drain round), or abort
    /// the epoch when fewer than `min_clients` members are healthy.
    fn start_round(&mut self, height: u32, now: i64, randomness: &[u8; 32]) {
        let healthy = self.healthy_count();
        if healthy < self.config.min_clients as usize || healthy == 0 {
            self.end_epoch(now, false);
            return;
        }
        let data = height < self.progress.epoch_rounds;
        let seed = round_seed(
            randomness,
            &self.run_id,
            self.progress.epoch,
            height,
            self.progress.step,
        );
        let n = healthy as u16;
        let cfg = self.config;
        // Results of round h-2 are applied now (decided by round h-1's witnesses).
        if height >= 2 && self.decided(height - 2) {
            self.progress.steps_done = self.progress.steps_done.saturating_add(1);
        }
        // Data: requeued spans first (FIFO), then fresh samples at the ramp's batch size.
        let (data_index, batch, fresh) = if !data {
            (self.progress.data_index, 0, false)
        } else if let Some(span) = self.pop_requeue() {
            (span.start, span.len, false)
        } else {
            let b = cfg.batch_size_at(self.progress.steps_done);
            (self.progress.data_index, b, true)
        };
        let epoch = self.progress.epoch;
        let step = self.progress.step;
        let mut members = [0u8; MAX_CLIENTS / 8];
        for s in 0..MAX_CLIENTS {
            if self.clients[s].is_healthy() {
                bit_set(&mut members, s);
            }
        }
        let r = &mut self.rounds[height as usize % ROUND_RING];
        bytemuck::fill_zeroes(core::slice::from_mut(r));
        r.seed = seed;
        r.data_index = data_index;
        r.started_at = now;
        r.step = step;
        r.epoch = epoch;
        r.height = height;
        r.batch_size = batch;
        r.member_count = n;
        r.witness_count = witness_count(&cfg, n);
        r.verifier_count = verifier_count(&cfg, n);
        r.kind = if data {
            RoundKind::Data as u8
        } else {
            RoundKind::Drain as u8
        };
        r.members = members;
        r.train_secs = timing::train_window(&cfg, self.train_est_x16).min(u16::MAX as u32) as u16;
        if fresh {
            self.progress.data_index = data_index.saturating_add(batch as u64);
        }
        if data {
            self.progress.step = step.saturating_add(1);
        }
        self.progress.height = height;
        self.set_phase(Phase::RoundTrain, now);
    }

    /// Round `h` is over (final). Without a witness quorum the previous round's results cannot
    /// be applied: its span goes back on the requeue.
    fn end_round(&mut self, now: i64, randomness: &[u8; 32]) {
        let h = self.progress.height;
        if h >= 1 && (!self.reached_quorum(h) || !self.exchanged(h - 1)) {
            self.requeue_round(h - 1);
        }
        if self.stalled(h) {
            // No quorum for STALL_ROUNDS rounds in a row: the live members cannot outvote the
            // silent witnesses, so health checks (which need a quorum) cannot drop them either.
            // Abort: warmup of the next epoch drops whoever is gone, and pending joiners enter.
            self.end_epoch(now, false);
            return;
        }
        if h < self.progress.epoch_rounds {
            self.start_round(h + 1, now, randomness);
        } else {
            // The drain round is over: the last data round is applied as Cooldown starts.
            if h >= 1 && self.decided(h - 1) {
                self.progress.steps_done = self.progress.steps_done.saturating_add(1);
            }
            self.set_phase(Phase::Cooldown, now);
        }
    }

    /// Rounds `h - STALL_ROUNDS + 1 ..= h` of this epoch all ended without a witness quorum.
    fn stalled(&self, h: u32) -> bool {
        let n = STALL_ROUNDS as u32;
        h + 1 >= n && (h + 1 - n..=h).all(|x| !self.reached_quorum(x))
    }

    /// Round `h` of this epoch exists and reached its witness quorum.
    fn reached_quorum(&self, h: u32) -> bool {
        let r = &self.rounds[h as usize % ROUND_RING];
        r.epoch == self.progress.epoch
            && r.height == h
            && r.kind != RoundKind::Empty as u8
            && r.submissions_len >= quorum(&self.config, r)
    }

    /// Data round `h` (a data round of this epoch) had a result attested by round h+1's
    /// witnesses; without one it applies nothing and must not count as a step.
    fn exchanged(&self, h: u32) -> bool {
        let (r, w) = (
            &self.rounds[h as usize % ROUND_RING],
            &self.rounds[(h as usize + 1) % ROUND_RING],
        );
        r.kind != RoundKind::Data as u8 || any_trainer_attested(self, r, w)
    }

    /// Data round `h`'s results are applied: it is a data round, not requeued, and round h+1
    /// reached quorum.
    fn decided(&self, h: u32) -> bool {
        let r = &self.rounds[h as usize % ROUND_RING];
        r.epoch == self.progress.epoch
            && r.height == h
            && r.kind == RoundKind::Data as u8
            && r.requeued == 0
            && self.reached_quorum(h + 1)
    }

    /// Put data round `h`'s span back for retraining (once).
    fn requeue_round(&mut self, h: u32) {
        let epoch = self.progress.epoch;
        let r = &mut self.rounds[h as usize % ROUND_RING];
        if r.epoch != epoch || r.height != h || r.kind != RoundKind::Data as u8 || r.requeued != 0 {
            return;
        }
        r.requeued = 1;
        let span = Span {
            start: r.data_index,
            len: r.batch_size,
            pad: 0,
        };
        if span.len == 0 {
            return;
        }
        let n = self.requeue_len as usize;
        if n < REQUEUE_CAP {
            self.requeue[n] = span;
            self.requeue_len += 1;
        } else {
            self.lost_samples = self.lost_samples.saturating_add(span.len as u64);
        }
    }

    fn pop_requeue(&mut self) -> Option<Span> {
        let n = (self.requeue_len as usize).min(REQUEUE_CAP);
        if n == 0 {
            return None;
        }
        let first = self.requeue[0];
        self.requeue.copy_within(1..n, 0);
        self.requeue[n - 1] = Span::default();
        self.requeue_len = (n - 1) as u32;
        Some(first)
    }

    /// Close the epoch. An abort (pause, or too few members) during round h applies nothing
    /// more: the spans of rounds h-1 and h go back on the requeue, so no sample is lost. Slots
    /// of leavers are freed, pending joiners become members.
    fn end_epoch(&mut self, now: i64, to_paused: bool) {
        let phase = Phase::from_u8(self.phase);
        if matches!(phase, Some(Phase::RoundTrain | Phase::RoundWitness)) {
            let h = self.progress.height;
            if h >= 1 {
                self.requeue_round(h - 1);
            }
            self.requeue_round(h);
        }
        for c in self.clients.iter_mut() {
            match ClientState::from_u8(c.state) {
                Some(ClientState::Dropped | ClientState::Withdrawn | ClientState::Ejected)
                | None => {
                    *c = Client::zeroed();
                }
                Some(ClientState::Pending) => c.state = ClientState::Healthy as u8,
                _ => {}
            }
        }
        self.progress.epoch = self.progress.epoch.saturating_add(1);
        self.progress.height = 0;
        self.progress.epoch_rounds = 0;
        self.warmup_ready = [0; MAX_CLIENTS / 8];
        self.min_reached_at = 0;
        self.checkpointed = 0;
        let next = if to_paused {
            Phase::Paused
        } else if self.progress.steps_done >= self.config.total_steps {
            Phase::Finished
        } else {
            Phase::WaitingForMembers
        };
        self.set_phase(next, now);
    }

    // ------------------------------------------------------------------ witnesses

    /// A member reports it has loaded the model and is ready (Warmup only).
    #[inline(never)]
    pub fn warmup_witness(&mut self, wallet: &[u8; 32], now: i64) -> CoreResult<()> {
        self.check()?;
        if self.phase()? != Phase::Warmup {
            return Err(CoreError::WrongPhase);
        }
        let slot = self.healthy_slot(wallet)?;
        if bit_get(&self.warmup_ready, slot) {
            return Err(CoreError::DuplicateWitness);
        }
        bit_set(&mut self.warmup_ready, slot);
        self.touch(now);
        Ok(())
    }

    /// A witness of the current round submits its filters about the previous round's results.
    /// `position` is the committee proof: the slot must sit at that position of the round's
    /// shuffle and the position must be a witness position.
    #[inline(never)]
    pub fn witness(&mut self, wallet: &[u8; 32], input: &WitnessInput, now: i64) -> CoreResult<()> {
        let position = input.position;
        self.check()?;
        if !matches!(self.phase()?, Phase::RoundTrain | Phase::RoundWitness) {
            return Err(CoreError::WrongPhase);
        }
        let slot = self.healthy_slot(wallet)?;
        let h = self.progress.height;
        let r = self.round(h)?;
        let c = Committee::compute(r);
        if position >= c.n {
            return Err(CoreError::IndexOutOfRange);
        }
        if position >= c.witnesses || position as usize >= MAX_WITNESSES {
            return Err(CoreError::NotWitness);
        }
        if c.slot_at(position) != Some(slot) {
            return Err(CoreError::BadProof);
        }
        if r.witnessed & (1u32 << position) != 0 {
            return Err(CoreError::DuplicateWitness);
        }
        let len = r.submissions_len as usize;
        if len >= MAX_WITNESSES {
            return Err(CoreError::InvalidState);
        }
        let q = quorum(&self.config, r);
        let r = self.round_mut(h)?;
        let sub = &mut r.submissions[len];
        sub.client = slot as u16;
        sub.position = position;
        sub.stats = input.stats;
        sub.results = input.results;
        sub.trainers = input.trainers;
        r.submissions_len += 1;
        r.witnessed |= 1u32 << position;
        if r.quorum_at == 0 && r.submissions_len >= q {
            r.quorum_at = now.max(1);
        }
        self.touch(now);
        Ok(())
    }

    /// A healthy member asks the coordinator to drop `target` for data round `height`, judged by
    /// round `height + 1`'s witnesses (see `derive::health_verdict`). Returns the reason.
    #[inline(never)]
    pub fn health_check(
        &mut self,
        wallet: &[u8; 32],
        target: u16,
        height: u32,
        now: i64,
    ) -> CoreResult<Unhealthy> {
        self.check()?;
        if !self.in_rounds() {
            return Err(CoreError::WrongPhase);
        }
        self.healthy_slot(wallet)?;
        let t = target as usize;
        if t >= MAX_CLIENTS {
            return Err(CoreError::IndexOutOfRange);
        }
        if !self.clients[t].is_healthy() {
            return Err(CoreError::NotHealthy);
        }
        let verdict = health_verdict(self, height, t)?.ok_or(CoreError::StillHealthy)?;
        self.clients[t].state = ClientState::Dropped as u8;
        self.touch(now);
        Ok(verdict)
    }

    /// The verification target of the verifier at `slot` in round `height` (it recomputes that
    /// client's result of round `height - 1`).
    #[inline(never)]
    pub fn verification_target_of(&self, height: u32, slot: usize) -> CoreResult<Option<usize>> {
        let cur = self.round(height)?;
        let prev = match height.checked_sub(1).map(|h| self.round(h)) {
            Some(Ok(p)) => p,
            _ => return Ok(None),
        };
        let cc = Committee::compute(cur);
        let pos = match cc.position_of(slot) {
            Some(p) => p,
            None => return Ok(None),
        };
        let pc = Committee::compute(prev);
        let (pv, cv) = (
            Seated {
                round: prev,
                committee: &pc,
            },
            Seated {
                round: cur,
                committee: &cc,
            },
        );
        Ok(verification_target(&self.config, &pv, &cv, pos))
    }

    /// A verifier of the current round reports that its assigned target's previous-round result
    /// does not match its recomputation. When `eject_reports` distinct assigned verifiers have
    /// reported, the target is ejected (and its results of this and the previous round are
    /// excluded from the apply set). Returns whether the target was ejected now.
    #[inline(never)]
    pub fn report(&mut self, wallet: &[u8; 32], target: u16, now: i64) -> CoreResult<bool> {
        self.check()?;
        if !matches!(self.phase()?, Phase::RoundTrain | Phase::RoundWitness) {
            return Err(CoreError::WrongPhase);
        }
        let slot = self.healthy_slot(wallet)?;
        let t = target as usize;
        if t >= MAX_CLIENTS {
            return Err(CoreError::IndexOutOfRange);
        }
        let h = self.progress.height;
        let cur = self.round(h)?;
        let cc = Committee::compute(cur);
        let pos = cc.position_of(slot).ok_or(CoreError::NotVerifier)?;
        if cc.roles_at(pos) & ROLE_VERIFIER == 0 {
            return Err(CoreError::NotVerifier);
        }
        let prev = h
            .checked_sub(1)
            .ok_or(CoreError::NotAssigned)
            .and_then(|p| self.round(p).map_err(|_| CoreError::NotAssigned))?;
        let pc = Committee::compute(prev);
        let (pv, cv) = (
            Seated {
                round: prev,
                committee: &pc,
            },
            Seated {
                round: cur,
                committee: &cc,
            },
        );
        if verification_target(&self.config, &pv, &cv, pos) != Some(t) {
            return Err(CoreError::NotAssigned);
        }
        if bit_get(&cur.reported, slot) {
            return Err(CoreError::DuplicateReport);
        }
        // Count assigned verifiers (including this one) that reported `t`.
        let mut count = 1u32;
        for p in cc.trainers()..cc.n {
            let Some(vs) = cc.slot_at(p) else { continue };
            if vs != slot
                && bit_get(&cur.reported, vs)
                && verification_target(&self.config, &pv, &cv, p) == Some(t)
            {
                count += 1;
            }
        }
        let eject = count >= self.config.eject_reports as u32
            && self.clients[t].state != ClientState::Ejected as u8;
        let r = self.round_mut(h)?;
        bit_set(&mut r.reported, slot);
        if eject {
            bit_set(&mut r.ejected, t);
            self.clients[t].state = ClientState::Ejected as u8;
            let ban = self.banned_next as usize % MAX_BANNED;
            self.banned[ban] = self.clients[t].wallet;
            self.banned_next = self.banned_next.saturating_add(1);
        }
        self.touch(now);
        Ok(eject)
    }

    /// A healthy member records the epoch's checkpoint (Cooldown only, once per epoch).
    #[inline(never)]
    pub fn checkpoint(&mut self, wallet: &[u8; 32], model: &ModelRef, now: i64) -> CoreResult<()> {
        self.check()?;
        if self.phase()? != Phase::Cooldown {
            return Err(CoreError::WrongPhase);
        }
        let slot = self.healthy_slot(wallet)?;
        if self.checkpointed != 0 {
            return Err(CoreError::AlreadyCheckpointed);
        }
        model.validate()?;
        if self.checkpointer() != Some(slot) {
            return Err(CoreError::NotCheckpointer);
        }
        if model.kind != ModelKind::HuggingFace as u8 && model.content_hash().is_none() {
            return Err(CoreError::CheckpointUnhashed);
        }
        self.model = *model;
        self.checkpointed = 1;
        self.touch(now);
        Ok(())
    }

    /// The slot that may record this epoch's checkpoint (Cooldown only): the healthy member at
    /// index `seed mod n` of the healthy slots in slot order, with the drain round's seed. A
    /// member cannot choose it (the seed comes after the epoch's last join), and one that
    /// squats the lowest slot no longer owns every checkpoint.
    pub fn checkpointer(&self) -> Option<usize> {
        if self.phase().ok()? != Phase::Cooldown {
            return None;
        }
        let r = self.round(self.progress.height).ok()?;
        let n = self.healthy_count();
        if n == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&r.seed[..8]);
        let mut pick = (u64::from_le_bytes(b) % n as u64) as usize;
        for s in 0..MAX_CLIENTS {
            if self.clients[s].is_healthy() {
                if pick == 0 {
                    return Some(s);
                }
                pick -= 1;
            }
        }
        None
    }

    // ------------------------------------------------------------------ operator

    /// Halt the run (authority only, checked by the host). A running epoch is aborted: data not
    /// yet applied is rewound, leavers' slots are freed.
    #[inline(never)]
    pub fn pause(&mut self, now: i64) -> CoreResult<()> {
        self.check()?;
        match self.phase()? {
            Phase::Paused => return Err(CoreError::AlreadyPaused),
            Phase::WaitingForMembers | Phase::Finished => {
                self.min_reached_at = 0;
                self.set_phase(Phase::Paused, now);
            }
            _ => self.end_epoch(now, true),
        }
        self.touch(now);
        Ok(())
    }

    /// Resume a paused run: `WaitingForMembers`, or `Finished` if no steps are left.
    #[inline(never)]
    pub fn resume(&mut self, now: i64) -> CoreResult<()> {
        self.check()?;
        if self.phase()? != Phase::Paused {
            return Err(CoreError::NotPaused);
        }
        let next = if self.progress.steps_done >= self.config.total_steps {
            Phase::Finished
        } else {
            Phase::WaitingForMembers
        };
        self.set_phase(next, now);
        self.touch(now);
        Ok(())
    }

    /// Replace the config (Paused only; an identical config changes nothing, not even the nonce).
    #[inline(never)]
    pub fn update_config(&mut self, config: &Config, now: i64) -> CoreResult<()> {
        self.check()?;
        if self.phase()? != Phase::Paused {
            return Err(CoreError::NotHalted);
        }
        config.validate()?;
        if self.config != *config {
            self.config = *config;
            // New bounds: measure again from the operator's maximum.
            self.train_est_x16 = 0;
            self.touch(now);
        }
        Ok(())
    }

    /// Replace the model reference (Paused only; identical: no change).
    #[inline(never)]
    pub fn update_model(&mut self, model: &ModelRef, now: i64) -> CoreResult<()> {
        self.check()?;
        if self.phase()? != Phase::Paused {
            return Err(CoreError::NotHalted);
        }
        model.validate()?;
        if self.model != *model {
            self.model = *model;
            self.touch(now);
        }
        Ok(())
    }

    /// The data `[start, end)` the client at `slot` trains in round `height`, if any.
    #[inline(never)]
    pub fn assignment_of(&self, height: u32, slot: usize) -> CoreResult<Option<(u64, u64)>> {
        let r = self.round(height)?;
        let c = Committee::compute(r);
        Ok(c.position_of(slot)
            .and_then(|p| assignment(r, c.trainers(), p)))
    }
}
