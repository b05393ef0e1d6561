//! A frame as a peer sends it: the header, then a payload decoded as each message kind the
//! agents and coordinators read from one another. An order that decodes is also checked the
//! way an agent checks orders. Half the inputs get a valid header around them, so that the
//! payload decoders are reached as often as the header checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_common::frame::{read_frame, FrameError, MAGIC};
use understudy_common::protocol::{
    AgentMessage, CoordinatorMessage, RenewAnswer, RenewRequest, PROTOCOL_VERSION,
};
use understudy_common::tls::revoked::Revocations;
use understudy_common::transfer::{DataMessage, DataReply, MAX_DATA_FRAME};
use understudy_common::workload::{OrderEnvelope, OrderReply, Report};

const CAP: u32 = 64 * 1024;

fn read<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut r = bytes;
    rt.block_on(read_frame(
        &mut r,
        PROTOCOL_VERSION,
        CAP.min(MAX_DATA_FRAME),
    ))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let bytes = if selector & 1 == 1 {
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(rest);
        framed = f;
        &framed[..]
    } else {
        rest
    };
    match (selector >> 1) % 9 {
        0 => {
            let _ = read::<AgentMessage>(bytes);
        }
        1 => {
            let _ = read::<CoordinatorMessage>(bytes);
        }
        2 => {
            if let Ok(OrderEnvelope { order, .. }) = read::<OrderEnvelope>(bytes) {
                let _ = order.problem();
                let _ = (order.kind(), order.target());
            }
        }
        3 => {
            let _ = read::<OrderReply>(bytes);
        }
        4 => {
            let _ = read::<Report>(bytes);
        }
        5 => {
            let _ = read::<DataMessage>(bytes);
        }
        6 => {
            let _ = read::<DataReply>(bytes);
        }
        7 => {
            let _ = read::<RenewRequest>(bytes);
            let _ = read::<RenewAnswer>(bytes);
        }
        _ => {
            let _ = read::<Revocations>(bytes);
        }
    }
});
