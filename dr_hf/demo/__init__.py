"""`dr-hf demo`: a Gradio page grading fundus photographs with one trained grader.

- `dr_hf.demo.grading`: what the page shows, without Gradio: every photograph is graded by
  `dr_hf.inference.predict` (the code path of `dr-hf predict`, its preprocessing and
  referable decision), shown as the model saw it (`Grader.view`), with a Grad-CAM overlay
  where `dr_hf.evaluation.heatmaps` can be imported;
- `dr_hf.demo.app`: the Gradio Blocks app (a single-photograph tab, a several-photographs tab with
  the `dr-hf predict` table and its CSV), and `serve`, which launches it with safe defaults
  (127.0.0.1, no share link, an upload size limit, a bounded queue, uploads in a temporary
  folder removed on close);
- `dr_hf.demo.space`: `export_space`, a folder that runs the same app as a Hugging Face Space;
- `dr_hf.demo.cli`: the flags of `dr-hf demo`.

Needs the `demo` extra: `pip install 'dr-hf[demo]'`. Research software, not a medical device.
"""

NOTICE = "Research software, not a medical device."  # shown on the page and in `dr-hf demo -h`
