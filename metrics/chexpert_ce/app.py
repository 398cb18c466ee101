import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load("chexpert_ce")
launch_gradio_widget(module)
