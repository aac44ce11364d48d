"""The page of ``diffinv serve``: a thin Gradio Blocks layer over :mod:`diffinv.app.handlers`.

Each event maps components to a :class:`~diffinv.app.handlers.JobRequest` and the
:class:`~diffinv.app.handlers.JobResult` back to components; the work, the checks and the error
messages live in the handlers. Element ids (``#input-file``, ``#run``, ``#status``, ``#metrics``,
``#restoration``, ...) are what the browser tests use.
"""

from pathlib import Path

import gradio as gr  # (imported by diffinv.app.server once GRADIO_TEMP_DIR is set)

from . import options
from .handlers import AppState, JobRequest, preview, run_job

INTRO = """# diffinv: zero-shot image restoration and sparse-view CT with diffusion priors
Upload a photo, a CT slice (DICOM, NIfTI, `.npy`, 16-bit PNG) or a sinogram (`.npy`), or pick an
example; choose a task, a prior and a method, and press **Restore**. *Degrade* mode degrades the
clean image with the task and scores the restoration against it; *measurement* mode restores
your observation as it is (a low-resolution photo for `srK`, a gray one for `colorize`, a damaged
photo with a mask, a sinogram for `ctN`). One job runs at a time; others wait in a short queue."""


def _update_choices(task: str | None, prior: str | None, method: str | None, app: AppState):
    spec = task or "sr4"
    priors = options.fitting_priors(spec, app.priors)
    methods = options.fitting_methods(spec)
    return (
        gr.update(
            choices=priors, value=options.choose(prior, priors, options.default_prior_for(spec, app.priors))
        ),
        gr.update(choices=methods, value=options.choose(method, methods, "ddnm")),
    )


def build_ui(app: AppState):
    """The Gradio Blocks of the app (not launched)."""

    def session_of(request):
        return app.sessions.get(getattr(request, "session_hash", None))

    def on_input(file, window, hu_offset, request: gr.Request):
        if not file:
            return None, None, "", gr.update()
        req = JobRequest(input_file=file, input_name=Path(file).name, window=window, hu_offset=hu_offset)
        path, status = preview(app, session_of(request), req)
        return path, path, status, options.NO_EXAMPLE

    def on_example(label, task, prior, method, request: gr.Request):
        ex = options.EXAMPLES.get(label)
        if ex is None:
            return (None, None, "", gr.update(), *(gr.update() for _ in range(8)))
        req = JobRequest(example=label, window=ex.window, hu_offset=ex.hu_offset)
        path, status = preview(app, session_of(request), req)
        prior_up, method_up = _update_choices(ex.task, ex.prior, ex.method, app)
        return (
            path,
            path,
            status,
            None,  # the upload is replaced by the example
            ex.task,
            prior_up,
            method_up,
            ex.window,
            ex.hu_offset,
            ex.resize,
            ex.mode,
            gr.update(value=None),  # mask file
        )

    def on_task(task, prior, method):
        return _update_choices(task, prior, method, app)

    def on_run(
        file,
        example,
        mode,
        task,
        prior,
        method,
        steps,
        noise,
        samples,
        seed,
        window,
        hu_offset,
        slice_index,
        resize,
        mask_file,
        brush,
        project,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress bar)
    ):
        req = JobRequest(
            input_file=file,
            example=example,
            input_name=Path(file).name if file else None,
            mode=mode,
            task=task,
            prior=prior,
            method=method,
            steps=steps,
            sigma_y=noise,
            samples=samples,
            seed=seed,
            window=window,
            hu_offset=hu_offset,
            slice_index=slice_index,
            resize=resize,
            mask_file=mask_file,
            brush=brush,
            project=project,
        )

        def report(fraction, text):
            progress(fraction, desc=text)

        r = run_job(app, session_of(request), req, report)
        return (
            r.status,
            r.measurement,
            r.restoration,
            gr.update(value=r.uncertainty, visible=r.uncertainty is not None),
            r.metrics,
            r.downloads or None,
        )

    def on_cancel(request: gr.Request):
        s = session_of(request)
        s.cancel.set()
        return "cancelling ..." if s.active_jobs else "nothing is running"

    def on_load(request: gr.Request):
        session_of(request)  # opens the session (its folder is made on first use)

    def on_unload(request: gr.Request):
        app.sessions.close(getattr(request, "session_hash", None))

    priors0 = options.fitting_priors("sr4", app.priors)
    with gr.Blocks(title="diffinv", delete_cache=(600, int(app.idle_seconds))) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                file = gr.File(label="input file", elem_id="input-file")
                example = gr.Dropdown(
                    [options.NO_EXAMPLE, *options.EXAMPLES],
                    value=options.NO_EXAMPLE,
                    label="or a bundled example",
                    elem_id="example",
                )
                mode = gr.Radio(
                    [(label, key) for key, label in options.MODES.items()],
                    value="degrade",
                    label="mode",
                    elem_id="mode",
                )
                task = gr.Dropdown(
                    options.TASKS, value="sr4", allow_custom_value=True, label="task", elem_id="task"
                )
                prior = gr.Dropdown(
                    priors0,
                    value=options.default_prior_for("sr4", app.priors),
                    label="prior",
                    elem_id="prior",
                )
                method = gr.Dropdown(
                    options.fitting_methods("sr4"), value="ddnm", label="method", elem_id="method"
                )
                steps_label = "steps (0: the method's default)"
                steps = gr.Slider(0, options.MAX_STEPS, value=20, step=1, label=steps_label, elem_id="steps")
                noise = gr.Slider(0, 0.2, value=0.0, step=0.005, label="noise sigma_y", elem_id="noise")
                samples_label = "samples (K > 1: their mean and an uncertainty map)"
                samples = gr.Slider(
                    1, options.MAX_SAMPLES, value=1, step=1, label=samples_label, elem_id="samples"
                )
                seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                project_label = "projection rounds onto {A x = y} and [0, 1] (noiseless measurements; 0: off)"
                project = gr.Slider(
                    0, options.MAX_PROJECT, value=0, step=50, label=project_label, elem_id="project"
                )
                resize = gr.Checkbox(False, label="resize to the prior's size (64x64)", elem_id="resize")
                with gr.Accordion("CT slices in Hounsfield units", open=False):
                    window = gr.Dropdown(
                        options.WINDOWS,
                        value="none",
                        allow_custom_value=True,
                        label="CT window: preset or CENTER,WIDTH in HU",
                        elem_id="window",
                    )
                    hu_offset = gr.Number(None, label="HU offset (files storing HU + offset, e.g. 1024)")
                    slice_index = gr.Number(None, precision=0, label="NIfTI slice (last axis)")
                with gr.Accordion("Inpainting mask (task inpaint-mask)", open=False):
                    mask_file = gr.File(
                        label="mask image: white = keep, black = missing", elem_id="mask-file"
                    )
                    brush = gr.ImageEditor(
                        label="or paint the missing pixels over the input",
                        type="numpy",
                        sources=(),
                        transforms=(),
                        layers=False,
                        brush=gr.Brush(colors=["#ff0000"], color_mode="fixed"),
                        elem_id="brush",
                    )
                with gr.Row():
                    run = gr.Button("Restore", variant="primary", elem_id="run")
                    cancel = gr.Button("Cancel", elem_id="cancel")
                status = gr.Textbox(label="status", interactive=False, lines=1, elem_id="status")
            with gr.Column(scale=2):
                shown = gr.Image(
                    label="input", type="filepath", interactive=False, height=256, elem_id="preview"
                )
                with gr.Row():
                    measurement = gr.Image(
                        label="measurement", type="filepath", interactive=False, elem_id="measurement"
                    )
                    restoration = gr.Image(
                        label="restoration (mean)", type="filepath", interactive=False, elem_id="restoration"
                    )
                    uncertainty = gr.Image(
                        label="uncertainty (posterior std)",
                        type="filepath",
                        interactive=False,
                        visible=False,
                        elem_id="uncertainty",
                    )
                metrics = gr.Markdown(elem_id="metrics")
                downloads = gr.File(
                    label="downloads: PNG, .npy, JSON record, config.json (diffinv restore --config)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )

        file.upload(
            on_input,
            [file, window, hu_offset],
            [shown, brush, status, example],
            queue=False,
            api_visibility="private",
        )
        example.input(
            on_example,
            [example, task, prior, method],
            [shown, brush, status, file, task, prior, method, window, hu_offset, resize, mode, mask_file],
            queue=False,
            api_visibility="private",
        )
        task.change(on_task, [task, prior, method], [prior, method], queue=False, api_visibility="private")
        run.click(
            on_run,
            [file, example, mode, task, prior, method, steps, noise]  # on_run's parameters, in order
            + [samples, seed, window, hu_offset, slice_index, resize, mask_file, brush, project],
            [status, measurement, restoration, uncertainty, metrics, downloads],
            concurrency_limit=app.max_waiting + 2,  # the JobQueue, not Gradio's queue, orders the jobs
            concurrency_id="restore",
            api_name="restore",
        )
        cancel.click(on_cancel, None, [status], queue=False, api_visibility="private")
        demo.load(on_load, None, None, queue=False, api_visibility="private")
        demo.unload(on_unload)
    return demo
