//! Links every core transition into an SBPF v0 program, to catch toolchain limits at link time
//! and to measure compute units in LiteSVM (`cu.py`). Not the real program: no signer or owner
//! checks. Account 0 is the state (`STATE_SIZE` bytes); instruction data is
//! `op u8, pad [7], now i64, wallet [32], key [32], u16 a, u16 b, u32 height, body...`.
#![no_std]
use psyche_core::*;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

const HEADER: usize = 88;

fn key(input: &[u8], at: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    if let Some(s) = input.get(at..at + 32) {
        k.copy_from_slice(s);
    }
    k
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map(|x| u16::from_le_bytes([x[0], x[1]])).unwrap_or(0)
}

fn body<T: bytemuck::Pod>(args: &[u8]) -> Option<T> {
    let b = args.get(HEADER..HEADER + core::mem::size_of::<T>())?;
    Some(bytemuck::pod_read_unaligned(b))
}

fn run(state: &mut State, args: &[u8]) -> CoreResult<u64> {
    if args.len() < HEADER {
        return Err(CoreError::IndexOutOfRange);
    }
    let op = args[0];
    let mut t = [0u8; 8];
    t.copy_from_slice(&args[8..16]);
    let now = i64::from_le_bytes(t);
    let w = key(args, 16);
    let k = key(args, 48);
    let a = u16_at(args, 80);
    let height = u16_at(args, 84) as u32;
    match op {
        0 => state.tick(now, &k).map(|o| o as u64),
        1 => state.join(&w, &k, now).map(|s| s as u64),
        2 => state.withdraw(&w, now).map(|_| 0),
        3 => state.warmup_witness(&w, now).map(|_| 0),
        4 => {
            let input: WitnessInput = body(args).ok_or(CoreError::IndexOutOfRange)?;
            state.witness(&w, &input, now).map(|_| 0)
        }
        5 => state.health_check(&w, a, height, now).map(|u| u as u64),
        6 => state.report(&w, a, now).map(|e| e as u64),
        7 => {
            let m: ModelRef = body(args).ok_or(CoreError::IndexOutOfRange)?;
            state.checkpoint(&w, &m, now).map(|_| 0)
        }
        8 => state.pause(now).map(|_| 0),
        9 => state.resume(now).map(|_| 0),
        10 => {
            let c: Config = body(args).ok_or(CoreError::IndexOutOfRange)?;
            state.update_config(&c, now).map(|_| 0)
        }
        11 => {
            let m: ModelRef = body(args).ok_or(CoreError::IndexOutOfRange)?;
            state.init(&k, &Config::default(), &m, now).map(|_| 0)
        }
        12 => {
            let m: ModelRef = body(args).ok_or(CoreError::IndexOutOfRange)?;
            state.update_model(&m, now).map(|_| 0)
        }
        _ => Err(CoreError::InvalidState),
    }
}

/// The SBF loader's aligned input: account count, one account (flags, key, owner, lamports,
/// data length, data, 10 KiB realloc space, padding, rent epoch), instruction data.
///
/// # Safety
/// Called by the runtime with its serialized input.
#[no_mangle]
pub unsafe extern "C" fn entrypoint(input: *mut u8) -> u64 {
    let read_u64 = |p: *const u8| u64::from_le_bytes(*(p as *const [u8; 8]));
    if read_u64(input) != 1 {
        return 1;
    }
    let data_len = read_u64(input.add(8 + 80)) as usize;
    let data = input.add(8 + 88);
    let mut off = 8 + 88 + data_len + 10 * 1024;
    off = (off + 7) & !7;
    off += 8; // rent epoch
    let ix_len = read_u64(input.add(off)) as usize;
    let ix = core::slice::from_raw_parts(input.add(off + 8), ix_len);
    if data_len != STATE_SIZE {
        return 2;
    }
    let state = &mut *(data as *mut State);
    match run(state, ix) {
        Ok(_) => 0,
        Err(e) => 0x100 + e.code() as u64,
    }
}
