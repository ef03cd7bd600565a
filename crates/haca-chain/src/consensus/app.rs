//! The loop that answers Malachite's requests (`AppMsg`) with the [`Host`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use haca_core::settlement::{Certificate, CommitSignature as SettlementSignature};
use malachitebft_app_channel::app::consensus::ProposedValue;
use malachitebft_app_channel::app::engine::host::Next;
use malachitebft_app_channel::app::streaming::StreamId;
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, CommitSignature, Round, Validity,
};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::LocallyProposedValue;
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use tracing::{debug, error, info, warn};

use super::context::{
    verify_signature, Address, BlockId, HacaContext, Height, Signature, Signer, ValidatorSet,
};
use super::parts::{self, Assembled, Streams};
use super::store::BlockStore;
use super::Host;

/// Converts Malachite's commit certificate to haca's.
pub fn to_settlement(cert: &CommitCertificate<HacaContext>) -> Certificate {
    Certificate {
        height: cert.height.0,
        round: cert.round.as_u32().unwrap_or(0),
        block_id: cert.value_id.0,
        signatures: cert
            .commit_signatures
            .iter()
            .map(|s| SettlementSignature {
                validator: s.address.0,
                signature: hex::encode(s.signature.0),
            })
            .collect(),
    }
}

/// Converts haca's certificate to Malachite's (for serving catch-up requests).
pub fn from_settlement(cert: &Certificate) -> Result<CommitCertificate<HacaContext>, String> {
    let commit_signatures = cert
        .signatures
        .iter()
        .map(|s| {
            let mut sig = [0u8; 64];
            hex::decode_to_slice(&s.signature, &mut sig)
                .map_err(|e| format!("signature of {} is not 64 hex bytes: {e}", s.validator))?;
            Ok(CommitSignature::new(Address(s.validator), Signature(sig)))
        })
        .collect::<Result<_, String>>()?;
    Ok(CommitCertificate {
        height: Height(cert.height),
        round: Round::new(cert.round),
        value_id: BlockId(cert.block_id),
        commit_signatures,
    })
}

/// How long before the propose timeout the host's `propose` must finish: a fifth of the
/// timeout, at least 5 ms and at most 200 ms.
pub fn propose_deadline(now: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    let margin = (timeout / 5).clamp(Duration::from_millis(5), Duration::from_millis(200));
    now + timeout.saturating_sub(margin)
}

pub(crate) struct App<H: Host> {
    pub host: Arc<H>,
    pub signer: Signer,
    pub address: Address,
    /// The last set the host named for its next height: used only if the host names none
    /// (a host bug), since Malachite needs a set to start a height.
    pub fallback: ValidatorSet,
    pub store: BlockStore,
    pub streams: Streams,
    /// The height consensus is working on.
    pub current: u64,
    /// Checked proposals of this run for `(height, round)`, replayed on `StartedRound`.
    pub undecided: BTreeMap<(u64, u32), Vec<ProposedValue<HacaContext>>>,
    /// Complete, signature-checked streams for heights above `current` (checked later).
    pub future: BTreeMap<u64, Vec<Assembled>>,
    /// Peers' listen addresses, and how long to wait for them before the first height.
    pub peers: Vec<SocketAddr>,
    pub peer_patience: Duration,
    /// Deliberate misbehaviour for fault tests ([`super::Fault::Equivocate`]): when this
    /// validator proposes, it also streams a second, different block for the same round.
    pub equivocate: bool,
}

/// Waits (up to `patience`) until every peer accepts TCP connections, then a little more
/// for libp2p to finish its handshakes. Proposals are broadcast to connected peers only, so
/// a network whose validators start together would otherwise lose its first round.
async fn await_peers(peers: &[SocketAddr], patience: Duration) {
    if peers.is_empty() {
        return;
    }
    let give_up = tokio::time::Instant::now() + patience;
    for peer in peers {
        while tokio::net::TcpStream::connect(peer).await.is_err() {
            if tokio::time::Instant::now() >= give_up {
                debug!(%peer, "peer not reachable yet; starting anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

impl<H: Host> App<H> {
    pub async fn run(mut self, mut channels: Channels<HacaContext>) {
        while let Some(msg) = channels.consensus.recv().await {
            if let Err(e) = self.handle(msg, &mut channels).await {
                error!("consensus adapter: {e}");
            }
        }
        debug!("consensus channel closed; the adapter stops");
    }

    fn proposed(
        &self,
        height: u64,
        round: Round,
        valid_round: Round,
        proposer: Address,
        value: BlockId,
        valid: bool,
    ) -> ProposedValue<HacaContext> {
        ProposedValue {
            height: Height(height),
            round,
            valid_round,
            proposer,
            value,
            validity: Validity::from_bool(valid),
        }
    }

    /// Checks a complete stream at the current height with the host and keeps the block.
    fn check_stream(&mut self, a: Assembled) -> ProposedValue<HacaContext> {
        let h = a.init.height.0;
        let claimed = a.init.block_id;
        let valid = match self.host.check(h, &a.block) {
            Ok(id) if id == claimed.0 => true,
            Ok(id) => {
                warn!(height = h, %claimed, computed = %id, "proposed block id does not match its bytes; voting nil");
                false
            }
            Err(reason) => {
                warn!(height = h, %claimed, %reason, "proposed block refused; voting nil");
                false
            }
        };
        let round = a.init.round.as_u32().unwrap_or(0);
        if let Some(first) = self.undecided.get(&(h, round)).and_then(|values| {
            values
                .iter()
                .find(|v| v.proposer == a.init.proposer && v.value != claimed)
        }) {
            warn!(
                height = h,
                round,
                proposer = %a.init.proposer,
                first = %first.value,
                second = %claimed,
                "the proposer streamed two different blocks for one round (equivocation)"
            );
        }
        if valid {
            if let Err(e) = self.store.put(h, round, claimed, false, a.block) {
                error!(height = h, "could not keep a proposed block: {e}");
            }
        }
        let value = self.proposed(
            h,
            a.init.round,
            a.init.pol_round,
            a.init.proposer,
            claimed,
            valid,
        );
        self.undecided
            .entry((h, round))
            .or_default()
            .push(value.clone());
        value
    }

    /// The validator set that signs `height`, from the host. For heights past the next one
    /// (not yet known) the next height's set stands in: Malachite re-checks buffered votes
    /// against the right set once it starts that height, and the adapter re-checks buffered
    /// proposal streams.
    fn set_for(&mut self, height: u64) -> ValidatorSet {
        let next = self.host.committed_height() + 1;
        if let Some(set) = self.host.validator_set(height) {
            let set = ValidatorSet::from_settlement(&set);
            if height == next {
                self.fallback = set.clone();
            }
            return set;
        }
        match self.host.validator_set(next) {
            Some(set) => {
                self.fallback = ValidatorSet::from_settlement(&set);
                self.fallback.clone()
            }
            None => {
                error!(
                    height,
                    "the host names no validator set for its next height; using the last known"
                );
                self.fallback.clone()
            }
        }
    }

    fn verify_stream(&mut self, a: &Assembled) -> Result<(), String> {
        let h = a.init.height.0;
        let set = self.set_for(h);
        let proposer = set.get(&a.init.proposer).ok_or_else(|| {
            format!(
                "proposer {} is not a validator at height {h}",
                a.init.proposer
            )
        })?;
        if !verify_signature(
            &proposer.public_key,
            &parts::fin_sign_bytes(&a.init, &a.block),
            &a.signature,
        ) {
            return Err(format!("bad stream signature from {}", a.init.proposer));
        }
        Ok(())
    }

    async fn publish(
        &self,
        channels: &mut Channels<HacaContext>,
        height: u64,
        round: Round,
        pol_round: Round,
        id: BlockId,
        block: &Bytes,
    ) -> eyre::Result<()> {
        self.publish_stream(channels, height, round, pol_round, id, block, None)
            .await
    }

    /// Streams a block; `suffix` (the second block of [`super::Fault::Equivocate`]) is
    /// appended to the stream id, so that receivers assemble the two streams apart.
    #[allow(clippy::too_many_arguments)]
    async fn publish_stream(
        &self,
        channels: &mut Channels<HacaContext>,
        height: u64,
        round: Round,
        pol_round: Round,
        id: BlockId,
        block: &Bytes,
        suffix: Option<&[u8]>,
    ) -> eyre::Result<()> {
        let init = parts::init_for(Height(height), round, pol_round, self.address, id, block);
        for mut msg in parts::stream(init, block, &self.signer) {
            if let Some(suffix) = suffix {
                let mut sid = msg.stream_id.to_bytes().to_vec();
                sid.extend_from_slice(suffix);
                msg.stream_id = StreamId::new(Bytes::from(sid));
            }
            channels
                .network
                .send(NetworkMsg::PublishProposalPart(msg))
                .await?;
        }
        Ok(())
    }

    /// For [`super::Fault::Equivocate`]: a second valid block for `(height, round)` that
    /// differs from `id` (built moments later, so at least its time differs).
    async fn twin(&self, height: u64, round: u32, id: BlockId) -> Option<(BlockId, Bytes)> {
        for _ in 0..20 {
            let block = self
                .host
                .propose(height, round, tokio::time::Instant::now())
                .await;
            if block.id != id.0 {
                return Some((BlockId(block.id), Bytes::from(block.bytes)));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        warn!(
            height,
            round, "fault equivocate: could not build a second, different block"
        );
        None
    }

    fn forget_through(&mut self, height: u64) {
        self.store.prune(height);
        self.undecided = self.undecided.split_off(&(height + 1, 0));
        self.future = self.future.split_off(&(height + 1));
    }

    async fn handle(
        &mut self,
        msg: AppMsg<HacaContext>,
        channels: &mut Channels<HacaContext>,
    ) -> eyre::Result<()> {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                await_peers(&self.peers, self.peer_patience).await;
                let committed = self.host.committed_height();
                self.current = committed + 1;
                self.forget_through(committed);
                let set = self.set_for(self.current);
                info!(
                    start_height = self.current,
                    validators = set.validators.len(),
                    voting = set.get(&self.address).is_some(),
                    "consensus ready"
                );
                let _ = reply.send((Height(self.current), set));
            }

            AppMsg::StartedRound {
                height,
                round,
                proposer,
                role,
                reply_value,
            } => {
                debug!(%height, %round, %proposer, ?role, "started round");
                let h = height.0;
                if h != self.current {
                    self.forget_through(h.saturating_sub(1));
                }
                self.current = h;
                if let Some(streams) = self.future.remove(&h) {
                    for a in streams {
                        // Buffered against a guessed set: check the proposer against the
                        // height's own set now that it is known.
                        match self.verify_stream(&a) {
                            Ok(()) => {
                                self.check_stream(a);
                            }
                            Err(e) => warn!(height = h, "buffered proposal dropped: {e}"),
                        }
                    }
                }
                let r = round.as_u32().unwrap_or(0);
                let values = self.undecided.get(&(h, r)).cloned().unwrap_or_default();
                let _ = reply_value.send(values);
            }

            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                let h = height.0;
                let r = round.as_u32().unwrap_or(0);
                let (id, block) = match self.store.own(h, r) {
                    Some(previous) => {
                        info!(height = h, round = r, id = %previous.0, "re-proposing the block built before a restart");
                        previous
                    }
                    None => {
                        let deadline = propose_deadline(tokio::time::Instant::now(), timeout);
                        let block = self.host.propose(h, r, deadline).await;
                        let id = BlockId(block.id);
                        let bytes = Bytes::from(block.bytes);
                        if let Err(e) = self.store.put(h, r, id, true, bytes.clone()) {
                            // Still propose: liveness first. After a crash this validator
                            // could then build a different block for the same round.
                            error!(height = h, round = r, "could not keep our proposal: {e}");
                        }
                        (id, bytes)
                    }
                };
                debug!(height = h, round = r, %id, len = block.len(), "proposing");
                let twin = if self.equivocate {
                    self.twin(h, r, id).await
                } else {
                    None
                };
                let _ = reply.send(LocallyProposedValue::new(height, round, id));
                if let Some((other, bytes)) = twin {
                    // Malachite signs and sends the consensus proposal for `id` only (the
                    // app channel cannot publish a second one); the second block goes out
                    // first, as a complete stream of its own (its own stream id), signed
                    // with this validator's key.
                    warn!(height = h, round = r, %id, %other, "fault equivocate: streaming two different blocks for one round");
                    self.publish_stream(
                        channels,
                        h,
                        round,
                        Round::Nil,
                        other,
                        &bytes,
                        Some(b"/equivocate"),
                    )
                    .await?;
                }
                self.publish(channels, h, round, Round::Nil, id, &block)
                    .await?;
            }

            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                address: _,
                value_id,
            } => match self.store.get(height.0, &value_id) {
                Some(block) => {
                    self.publish(channels, height.0, round, valid_round, value_id, &block)
                        .await?
                }
                None => {
                    warn!(%height, %round, %value_id, "asked to restream a block this validator does not have")
                }
            },

            AppMsg::ExtendVote { reply, .. } => {
                let _ = reply.send(None);
            }

            AppMsg::VerifyVoteExtension { reply, .. } => {
                let _ = reply.send(Ok(()));
            }

            AppMsg::ReceivedProposalPart { from, part, reply } => {
                let value = match self.streams.insert(from, part) {
                    None => None,
                    Some(Err(e)) => {
                        warn!(%from, "malformed proposal stream: {e}");
                        None
                    }
                    Some(Ok(a)) => {
                        let h = a.init.height.0;
                        if h < self.current {
                            debug!(%from, height = h, "proposal for a decided height; dropped");
                            None
                        } else if let Err(e) = self.verify_stream(&a) {
                            warn!(%from, "{e}");
                            None
                        } else if h > self.current {
                            self.future.entry(h).or_default().push(a);
                            None
                        } else {
                            Some(self.check_stream(a))
                        }
                    }
                };
                let _ = reply.send(value);
            }

            AppMsg::GetValidatorSet { height, reply } => {
                let set = self.set_for(height.0);
                let _ = reply.send(Some(set));
            }

            AppMsg::Decided {
                certificate,
                extensions: _,
                reply,
            } => {
                let h = certificate.height.0;
                let next = self.decided(certificate).await;
                let _ = reply.send(match next {
                    Ok(()) => {
                        self.current = h + 1;
                        let set = self.set_for(h + 1);
                        let voting = set.get(&self.address).is_some();
                        let was_voting = self
                            .host
                            .validator_set(h)
                            .is_some_and(|s| s.power_of(&self.address.0).is_some());
                        if voting != was_voting {
                            info!(
                                height = h + 1,
                                voting,
                                "this node's key {} the validator set",
                                if voting { "joined" } else { "left" }
                            );
                        }
                        Next::Start(Height(h + 1), set)
                    }
                    Err(e) => {
                        error!(
                            height = h,
                            "could not commit a decided block: {e}; restarting the height"
                        );
                        Next::Restart(Height(h), self.set_for(h))
                    }
                });
            }

            AppMsg::GetDecidedValue { height, reply } => {
                let value = match self.host.committed_block(height.0) {
                    Some((bytes, cert)) => match from_settlement(&cert) {
                        Ok(certificate) => {
                            Some(RawDecidedValue::new(Bytes::from(bytes), certificate))
                        }
                        Err(e) => {
                            error!(%height, "stored certificate does not convert: {e}");
                            None
                        }
                    },
                    None => None,
                };
                let _ = reply.send(value);
            }

            AppMsg::GetHistoryMinHeight { reply } => {
                let _ = reply.send(Height(1));
            }

            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                let value = match self.host.check(height.0, &value_bytes) {
                    Ok(id) => {
                        let id = BlockId(id);
                        let r = round.as_u32().unwrap_or(0);
                        match self.store.put(height.0, r, id, false, value_bytes) {
                            Ok(()) => {
                                Some(self.proposed(height.0, round, Round::Nil, proposer, id, true))
                            }
                            Err(e) => {
                                error!(%height, "could not keep a synced block: {e}");
                                None
                            }
                        }
                    }
                    Err(reason) => {
                        warn!(%height, %reason, "synced block refused");
                        None
                    }
                };
                let _ = reply.send(value);
            }
        }
        Ok(())
    }

    async fn decided(&mut self, certificate: CommitCertificate<HacaContext>) -> Result<(), String> {
        let h = certificate.height.0;
        if self.host.committed_height() >= h {
            warn!(height = h, "decided a height the host already committed");
            self.forget_through(h);
            return Ok(());
        }
        let block = self
            .store
            .get(h, &certificate.value_id)
            .ok_or_else(|| format!("no bytes for decided block {}", certificate.value_id))?;
        let cert = to_settlement(&certificate);
        let host = self.host.clone();
        let bytes = block.clone();
        tokio::task::spawn_blocking(move || host.commit(h, &bytes, cert))
            .await
            .map_err(|e| format!("commit task failed: {e}"))??;
        debug!(height = h, id = %certificate.value_id, signatures = certificate.commit_signatures.len(), "committed");
        self.forget_through(h);
        Ok(())
    }
}
