//! Links every core transition into an SBPF object, to catch toolchain limits at link time.
//! Not a real program: `input` is taken as the state followed by arguments.
#![no_std]
use psyche_core::*;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

fn key(input: &[u8], at: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    if let Some(s) = input.get(at..at + 32) {
        k.copy_from_slice(s);
    }
    k
}

/// # Safety
/// `input` points to a state followed by an argument buffer of 2048 bytes.
#[no_mangle]
pub unsafe extern "C" fn entrypoint(input: *mut u8) -> u64 {
    let state = &mut *(input as *mut State);
    let args = core::slice::from_raw_parts(input.add(STATE_SIZE), 2048);
    let sel = args[0];
    let now = i64::from_le_bytes([args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8]]);
    let w = key(args, 16);
    let k = key(args, 48);
    let r = match sel {
        0 => state.tick(now, &k).map(|o| o as u64),
        1 => state.join(&w, &k, now).map(|s| s as u64),
        2 => state.withdraw(&w, now).map(|_| 0),
        3 => state.warmup_witness(&w, now).map(|_| 0),
        4 => {
            let input = bytemuck::pod_read_unaligned::<WitnessInput>(&args[100..100 + 660]);
            state.witness(&w, &input, now).map(|_| 0)
        }
        5 => state.health_check(&w, args[9] as u16, args[10] as u32, now).map(|u| u as u64),
        6 => state.report(&w, args[9] as u16, now).map(|e| e as u64),
        7 => {
            let m = bytemuck::pod_read_unaligned::<ModelRef>(&args[100..100 + 320]);
            state.checkpoint(&w, &m, now).map(|_| 0)
        }
        8 => state.pause(now).map(|_| 0),
        9 => state.resume(now).map(|_| 0),
        10 => {
            let c = bytemuck::pod_read_unaligned::<Config>(&args[100..164]);
            state.update_config(&c, now).map(|_| 0)
        }
        11 => {
            let run = key(args, 80);
            let c = Config::default();
            let m = bytemuck::pod_read_unaligned::<ModelRef>(&args[100..100 + 320]);
            state.init(&run, &c, &m, now).map(|_| 0)
        }
        12 => {
            let m = bytemuck::pod_read_unaligned::<ModelRef>(&args[100..100 + 320]);
            state.update_model(&m, now).map(|_| 0)
        }
        _ => Err(CoreError::InvalidState),
    };
    match r {
        Ok(v) => v,
        Err(e) => 0x1_0000_0000 | e.code() as u64,
    }
}
