"""Command line: `python -m vist3a {generate, batch, eval, info, render, convert, mesh, parity, demo}`.

Bad input gets one line on stderr and exit code 2 (no traceback); outputs are written atomically, so
a failed run never leaves a partial file behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .errors import UsageError, VIST3AError
from .finite import finite_float

# The subcommands import their implementation inside the handler on purpose: `--help` and argument
# errors must answer without importing torch, diffusers or the models (seconds at start-up).

EXIT_BAD_INPUT = 2


# ---------------------------------------------------------------------------------------- helpers


def _check_output(path: str, suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise UsageError(f"output {p} must end in {' or '.join(suffixes)}")
    if not p.parent.exists():
        raise UsageError(f"output directory {p.parent} does not exist; create it or choose another -o")
    if p.is_dir():
        raise UsageError(f"output {p} is a directory; give a file name")
    return p


def _splat_suffixes() -> tuple[str, ...]:
    from .formats import SPLAT_SUFFIXES  # imports torch: only once a command runs

    return SPLAT_SUFFIXES


def _output_suffixes() -> tuple[str, ...]:
    """What generate and convert write: the splat formats and the .html viewer page (vist3a.share_html)."""
    return _splat_suffixes() + (".html",)


def _check_input(path: str | None, what: str) -> str | None:
    if path is not None and not Path(path).exists():
        raise UsageError(f"{what} {path} does not exist")
    return path


def _progress_bar():
    from tqdm import tqdm

    bars: dict = {}

    def report(stage: str, step: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=stage == "denoise", file=sys.stderr, disable=None)
        bar.n = step
        bar.refresh()
        if step >= total:
            bar.close()

    return report


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------------------------------- commands


def _seed(args) -> int:
    if args.seed is not None:
        return args.seed
    from .wan.seeding import OFFICIAL_SEED

    return OFFICIAL_SEED if args.seed_mode == "official" else 0


def _settings(args):
    """Check generate's model paths and sizes; return GenerateSettings (shared by generate and batch)."""
    from .pipeline import GenerateSettings

    for what, path in (("Wan model", args.wan), ("VAE", args.vae), ("text encoder", args.text_encoder),
                       ("tokenizer", args.tokenizer), ("LoRA", args.lora), ("decoder", args.decoder),
                       ("AnySplat weights", args.anysplat)):
        _check_input(path, what)
    if not args.tiny and (args.wan is None or args.decoder is None):
        raise UsageError("give --wan PATH and --decoder PATH (plus --anysplat for anysplat_stitched.pth), or --tiny for tiny random models")
    if args.prompt_index < 0:
        raise UsageError(f"--prompt-index must be 0 or more, got {args.prompt_index}")
    if not 0 <= args.sh_degree <= 4:
        raise UsageError(f"--sh-degree must be between 0 and 4, got {args.sh_degree}")
    settings = GenerateSettings(frames=args.frames, height=args.size, width=args.size, steps=args.steps, cfg=args.cfg,
                                shift=args.shift, seed=_seed(args), seed_mode=args.seed_mode,
                                prompt_index=args.prompt_index, camera_template=not args.no_camera_template,
                                negative_prompt=args.negative, voxelize=False if args.no_voxelize else None,
                                min_opacity=args.min_opacity)
    from .wan.sampling import check_video_shape

    check_video_shape(settings.frames, settings.height, settings.width, settings.steps)
    from .limits import check_generation

    check_generation(settings.frames, settings.height, settings.width, device=args.device or ("cuda" if _cuda() else "cpu"))
    return settings


def _load_pipeline(args, device=None):
    from .pipeline import VIST3APipeline

    return VIST3APipeline.load(wan=args.wan, vae=args.vae, text_encoder=args.text_encoder, tokenizer=args.tokenizer,
                               lora=args.lora, lora_strength=args.lora_strength, decoder=args.decoder,
                               anysplat=args.anysplat, tiny=args.tiny, device=device or args.device, seed=args.model_seed)


def _generate(args) -> int:
    from .wan.prompts import empty_prompt_note

    out = _check_output(args.output, _output_suffixes())
    mesh = _check_mesh_output(args.mesh) if args.mesh else None
    settings = _settings(args)
    empty = empty_prompt_note(args.prompt, not args.no_camera_template)
    if empty:
        _note(empty)
    t0 = time.perf_counter()
    pipe = _load_pipeline(args)
    for part, what in pipe.described.items():
        print(f"{part}: {what}")
    t1 = time.perf_counter()
    scene, _ = pipe.generate(args.prompt, settings, progress=_progress_bar())
    t2 = time.perf_counter()
    from .outputs import save_scene_outputs

    written = save_scene_outputs(scene, out, sh_degree=args.sh_degree, views=Path(args.views) if args.views else None)
    print(f"{scene.gaussians.num} Gaussians; load {t1 - t0:.1f} s, generate {t2 - t1:.1f} s")
    for path in written:
        print(f"wrote {path}")
    if mesh is not None:
        from .scene_view import CameraSet

        cams = CameraSet(scene.c2w, scene.intrinsics, scene.image_size)
        _mesh_and_write(scene.gaussians, cams, mesh, args)
    return 0


def _check_mesh_output(path: str) -> Path:
    from .formats.mesh_files import MESH_SUFFIXES
    from .mesh import check_mesh_dependencies

    out = _check_output(path, MESH_SUFFIXES)
    check_mesh_dependencies(write=True)
    return out


def _mesh_and_write(gaussians, cameras, out: Path, args) -> None:
    """Mesh a scene with the mesh options of ``args`` (generate --mesh, mesh) and report what came out."""
    from .formats.mesh_files import write_mesh
    from .mesh import mesh_topology, splats_to_mesh

    if args.mesh_resolution < 16 or args.mesh_image_size < 16 or args.orbit_views < 0:
        raise UsageError("--resolution and --image-size must be >= 16 and --orbit-views >= 0")
    if not 0 <= args.min_component < 1:
        raise UsageError(f"--min-component is a fraction of the largest piece, in [0, 1); got {args.min_component}")
    bar = _progress_bar()
    t0 = time.perf_counter()
    m = splats_to_mesh(gaussians, cameras, views=args.mesh_views, resolution=args.mesh_resolution,
                       image_size=args.mesh_image_size, extra_views=args.orbit_views, min_component=args.min_component,
                       progress=lambda done, total: bar("mesh", done, total))
    t1 = time.perf_counter()
    path = write_mesh(m, out, axes=args.axes)
    topo = mesh_topology(m.vertices, m.faces)
    print(f"mesh from {m.info['view_description']}: {topo.vertices} vertices, {topo.faces} faces, "
          f"{topo.components} piece(s), {topo.boundary_loops} hole(s), genus {topo.genus:g}; {t1 - t0:.1f} s")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _batch(args) -> int:
    from .batch import batch_main
    from .render.media import mp4_available

    if args.video_ext == "mp4" and not mp4_available():
        raise UsageError("batch writes gs.mp4/depth.mp4 and needs imageio + imageio-ffmpeg (pip install imageio imageio-ffmpeg), or pass --video-ext webp")
    if args.trajectory_interp < 0:
        raise UsageError(f"--trajectory-interp must be >= 0, got {args.trajectory_interp}")
    _check_input(args.prompts, "prompt file")
    if args.prompt_index:
        raise UsageError("--prompt-index is for generate: in batch the k-th prompt of each rank takes draw k of the "
                         "official noise stream, as inference_t23d.py does; leave it out")
    settings = _settings(args)

    def load(info):
        device = args.device
        if device in (None, "cuda") and _cuda():  # one GPU per local rank
            import torch

            device = f"cuda:{info.local_rank % torch.cuda.device_count()}"
            torch.cuda.set_device(device)
        pipe = _load_pipeline(args, device)
        if info.rank == 0:
            for part, what in pipe.described.items():
                print(f"{part}: {what}", flush=True)
        return pipe

    return batch_main(args, load, settings)


def _info(args) -> int:
    from .info import describe

    for line in describe(args.path):
        print(line)
    return 0


def _render(args) -> int:
    from .formats import read_splats
    from .render import render_orbit
    from .render.media import save_orbit_video, save_png_grid

    _check_input(args.input, "splat file")
    out = _check_output(args.output, (".png",))
    video = _check_output(args.video, (".webp", ".gif", ".mp4")) if args.video else None
    if args.orbit < 1 or args.size < 8:
        raise UsageError("--orbit must be >= 1 and --size >= 8")
    g = read_splats(args.input, opacity=args.opacity, report=_note)
    rgb, _, _ = render_orbit(g, n=args.orbit, width=args.size, height=args.size, elevation_deg=args.elevation)
    print(f"wrote {save_png_grid(rgb, out)}")
    if video is not None:
        print(f"wrote {save_orbit_video(rgb, video)}")
    return 0


def _convert(args) -> int:
    from .formats import convert

    _check_input(args.input, "input")
    out = _check_output(args.output, _output_suffixes())
    t0 = time.perf_counter()
    if out.suffix.lower() == ".html":  # a viewer page: written from the scene, not a splat format of its own
        from .formats import read_splats
        from .share_html import save_html

        g = read_splats(args.input, opacity=args.opacity, report=_note)
        path = save_html(g, out, sh_degree=3 if args.sh_degree is None else args.sh_degree)
        print(f"wrote {path} ({g.num} Gaussians, {path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        return 0
    path, g = convert(args.input, out, sh_degree=args.sh_degree, opacity=args.opacity, report=_note,
                      ply_layout=args.ply_layout)
    print(f"wrote {path} ({g.num} Gaussians, {path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


def _mesh(args) -> int:
    from .formats import read_splats
    from .mesh import load_cameras

    _check_input(args.input, "splat file")
    out = _check_mesh_output(args.output)
    cameras = load_cameras(_check_input(args.cameras, "cameras file")) if args.cameras else None
    if cameras is None and args.mesh_views == "predicted":
        raise UsageError(f"{args.input} carries no cameras: give --cameras cameras.json (written by generate --views / batch) "
                         "or use --mesh-views auto")
    g = read_splats(args.input, opacity=args.opacity, report=_note)
    if cameras is None and args.mesh_views == "auto":
        _note(f"{args.input} carries no cameras; meshing from {args.orbit_views} views around it "
              "(--cameras cameras.json adds the predicted ones)")
    _mesh_and_write(g, cameras, out, args)
    return 0


def _parity(args) -> int:
    from .parity import run_parity

    report = run_parity(args.fixture, tol=args.tol)
    return 0 if report.passed else 1


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), models_dir=args.models)


# ---------------------------------------------------------------------------------------- parser


def _generate_options(g: argparse.ArgumentParser) -> None:
    """generate's model and sampling options (also taken by batch)."""
    g.add_argument("--tiny", action="store_true", help="tiny random models for whatever is not given by path (offline demo)")
    g.add_argument("--wan", help="Wan 2.1 T2V: diffusers folder or ComfyUI diffusion-model file")
    g.add_argument("--vae", help="Wan VAE file (ComfyUI single file), overrides the folder's")
    g.add_argument("--text-encoder", dest="text_encoder", help="UMT5 text encoder file (ComfyUI single file)")
    g.add_argument("--tokenizer", help="tokenizer folder (only needed for single files without an embedded one)")
    g.add_argument("--lora", help="VIST3A Wan LoRA folder (vist3a_1.3b_lora_ema/)")
    g.add_argument("--lora-strength", dest="lora_strength", type=finite_float, default=1.0)
    g.add_argument("--decoder", help="anysplat_stitched.pth or a stitched-decoder export folder")
    g.add_argument("--anysplat", help="AnySplat folder (model.safetensors + config.json), base of anysplat_stitched.pth")
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--cfg", type=finite_float, default=7.5)
    g.add_argument("--shift", type=finite_float, default=5.0)
    g.add_argument("--seed", type=int, default=None, help="noise seed (default 0; 12413 with --seed-mode official)")
    g.add_argument("--seed-mode", dest="seed_mode", choices=("portable", "official"), default="portable",
                   help="portable: CPU generator, same scene on any machine; official: global RNG seeded and drawn "
                        "on the device as inference_t23d.py does (reproduces official samples on the same GPU)")
    g.add_argument("--prompt-index", dest="prompt_index", type=int, default=0,
                   help="official seed mode: position of the prompt in the official run's prompt list (0 = first; "
                        "with N ranks, its position in its rank's share). batch sets it per prompt")
    g.add_argument("--frames", type=int, default=13, help="video frames, 4k+1 (13 official, 21 for the extended decoder)")
    g.add_argument("--size", type=int, default=512, help="video width = height, multiple of 16")
    g.add_argument("--sh-degree", dest="sh_degree", type=int, default=3,
                   help="SH degree written to the PLY (0-4; default 3, the highest common viewers read; 4 keeps AnySplat's full SH)")
    g.add_argument("--negative", default=None, help="negative prompt (default: the official one)")
    g.add_argument("--no-camera-template", dest="no_camera_template", action="store_true", help="use the prompt as is")
    g.add_argument("--min-opacity", dest="min_opacity", type=finite_float, default=0.0, help="drop Gaussians fainter than this")
    g.add_argument("--no-voxelize", dest="no_voxelize", action="store_true", help="keep one Gaussian per pixel")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    g.add_argument("--model-seed", dest="model_seed", type=int, default=0, help=argparse.SUPPRESS)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2) like every other input error, not the usage block."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")
def _mesh_options(p: argparse.ArgumentParser) -> None:
    """Meshing options (mesh, generate --mesh); see vist3a.mesh."""
    p.add_argument("--mesh-views", dest="mesh_views", choices=("auto", "predicted", "orbit"), default="auto",
                   help="cameras to fuse: auto (predicted cameras + views of the far side, or an orbit alone without "
                        "cameras), predicted (only the cameras), orbit (only generated views)")
    p.add_argument("--resolution", dest="mesh_resolution", type=int, default=256,
                   help="voxels along the longest side of the scene (default 256)")
    p.add_argument("--image-size", dest="mesh_image_size", type=int, default=384, help="rendered depth size, longer side (default 384)")
    p.add_argument("--orbit-views", dest="orbit_views", type=int, default=48, help="generated views of the far side (default 48)")
    p.add_argument("--min-component", dest="min_component", type=finite_float, default=0.01,
                   help="drop pieces with fewer faces than this fraction of the largest (floaters; default 0.01, 0 keeps all)")
    p.add_argument("--axes", choices=("gltf", "scene"), default="gltf",
                   help="gltf: +Y up, the scene turned 180 degrees about Z as in glTF splats (default); scene: the splats' own coordinates")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m vist3a", description="VIST3A: text to 3D Gaussian splats")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="text -> 3D Gaussian splats (.ply)")
    g.add_argument("prompt")
    g.add_argument("-o", "--output", required=True,
                   help="output .ply, .spz, .splat, .glb (glTF KHR_gaussian_splatting; .spz.glb: SPZ-compressed) or .html "
                        "(a viewer page to share); format from the extension")
    _generate_options(g)
    g.add_argument("--views", help="also render views into this folder (predicted cameras, orbit PNG + WebP, trajectory + depth WebP, cameras.json)")
    g.add_argument("--mesh", help="also write a mesh of the scene (.glb, .ply or .obj), fused from the predicted cameras and an orbit")
    _mesh_options(g)
    g.set_defaults(func=_generate)

    b = sub.add_parser("batch", help="one folder per prompt of a prompt file (official layout); torchrun shards it")
    b.add_argument("prompts", help="text file, one prompt per line")
    b.add_argument("-o", "--output", required=True, help="output folder (created; rerun to resume)")
    _generate_options(b)
    b.add_argument("--trajectory-interp", dest="trajectory_interp", type=int, default=10,
                   help="views interpolated between predicted cameras in gs/depth videos (official 10)")
    b.add_argument("--also", action="append", choices=(".spz", ".splat", ".glb", ".spz.glb", ".html"), default=[], metavar="EXT",
                   help="also write gaussians.EXT beside gaussians.ply in each folder (.spz, .splat, .glb, .spz.glb, or .html: a "
                        "viewer page to share; repeatable)")
    b.add_argument("--video-ext", dest="video_ext", choices=("mp4", "webp"), default="mp4",
                   help="gs/depth video format (mp4 as official; the evaluation reads both)")
    b.set_defaults(func=_batch)

    from .evaluation.cli import add_eval_parser

    add_eval_parser(sub)

    i = sub.add_parser("info", help="detect, validate and summarise a weight file/folder or a PLY")
    i.add_argument("path")
    i.set_defaults(func=_info)

    r = sub.add_parser("render", help="render an orbit of any 3DGS .ply / .spz / .splat / .glb to a PNG grid")
    r.add_argument("input")
    r.add_argument("-o", "--output", required=True, help="output .png")
    r.add_argument("--orbit", type=int, default=8, help="number of orbit views")
    r.add_argument("--size", type=int, default=256)
    r.add_argument("--elevation", type=finite_float, default=15.0)
    r.add_argument("--video", help="also write the orbit as .webp/.gif/.mp4")
    r.add_argument("--opacity", choices=("auto", "logit", "linear"), default="auto",
                   help="how the PLY stores opacity: logit (3DGS), linear (official VIST3A exporter), auto (detect; default)")
    r.set_defaults(func=_render)

    c = sub.add_parser("convert", help="convert splats between .ply, .spz, .splat and .glb, or to an .html page (formats from the extensions)")
    c.add_argument("input", help=".ply (3DGS or official layout), .spz, .splat or .glb (KHR_gaussian_splatting)")
    c.add_argument("output", help=".ply, .spz, .splat, .glb, .spz.glb (SPZ-compressed glTF) or .html (a viewer page)")
    c.add_argument("--sh-degree", dest="sh_degree", type=int, default=None,
                   help="SH degree to write (0-4; default 3, or what the format/scene holds: .spz/.glb <= 3, .splat 0)")
    c.add_argument("--opacity", choices=("auto", "logit", "linear"), default="auto", help="how an input PLY stores opacity (see render)")
    c.add_argument("--ply-layout", dest="ply_layout", choices=("standard", "official"), default="standard",
                   help="output PLY layout: standard 3DGS (default) or the official VIST3A exporter's (DC only, linear opacity)")
    c.set_defaults(func=_convert)

    m = sub.add_parser("mesh", help="splats -> triangle mesh (.glb, .ply, .obj): depth from cameras fused into a TSDF")
    m.add_argument("input", help="splat file: .ply, .spz or .splat")
    m.add_argument("-o", "--output", required=True, help="output .glb, .ply or .obj")
    m.add_argument("--cameras", help="cameras.json of the scene (written by generate --views and batch); default: none")
    _mesh_options(m)
    m.add_argument("--opacity", choices=("auto", "logit", "linear"), default="auto", help="how an input PLY stores opacity (see render)")
    m.set_defaults(func=_mesh)

    p = sub.add_parser("parity", help="check numerical parity with the official code on a fixture")
    p.add_argument("fixture", help="FIXTURE.safetensors with a sibling FIXTURE.json")
    p.add_argument("--tol", type=finite_float, default=1e-4, help="max|a-b| <= tol * max|ref| per tensor (default 1e-4)")
    p.set_defaults(func=_parity)

    d = sub.add_parser("demo", help="the `make demo` job: real weights if present, else tiny models")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--models", default=os.environ.get("VIST3A_MODELS"), help="models folder (default $VIST3A_MODELS or ./models)")
    d.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UsageError, VIST3AError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. a full disk while writing: the atomic writer left no partial file
        print(f"error: {exc.strerror or exc} ({exc.filename or 'output'})", file=sys.stderr)
        return EXIT_BAD_INPUT
