"""BibTeX of the papers the metrics come from, kept once for the `evaluate` modules and the model card."""

EXTRACTION = """\
@inproceedings{carlini2021extracting,
  title     = {Extracting Training Data from Large Language Models},
  author    = {Carlini, Nicholas and Tram{\\`e}r, Florian and Wallace, Eric and Jagielski, Matthew and
               Herbert-Voss, Ariel and Lee, Katherine and Roberts, Adam and Brown, Tom and Song, Dawn and
               Erlingsson, {\\'U}lfar and Oprea, Alina and Raffel, Colin},
  booktitle = {30th USENIX Security Symposium (USENIX Security 21)},
  pages     = {2633--2650},
  year      = {2021},
  url       = {https://www.usenix.org/conference/usenixsecurity21/presentation/carlini-extracting}
}
"""

TOFU = """\
@article{maini2024tofu,
  title         = {{TOFU}: A Task of Fictitious Unlearning for {LLM}s},
  author        = {Maini, Pratyush and Feng, Zhili and Schwarzschild, Avi and Lipton, Zachary C. and Kolter, J. Zico},
  journal       = {arXiv preprint arXiv:2401.06121},
  year          = {2024},
  eprint        = {2401.06121},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2401.06121}
}
"""

MIN_K = """\
@inproceedings{shi2024detecting,
  title     = {Detecting Pretraining Data from Large Language Models},
  author    = {Shi, Weijia and Ajith, Anirudh and Xia, Mengzhou and Huang, Yangsibo and Liu, Daogao and Blevins, Terra
               and Chen, Danqi and Zettlemoyer, Luke},
  booktitle = {The Twelfth International Conference on Learning Representations (ICLR)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2310.16789}
}
"""

MUSE = """\
@article{shi2024muse,
  title         = {{MUSE}: Machine Unlearning Six-Way Evaluation for Language Models},
  author        = {Shi, Weijia and Lee, Jaechan and Huang, Yangsibo and Malladi, Sadhika and Zhao, Jieyu and
                   Holtzman, Ari and Liu, Daogao and Zettlemoyer, Luke and Smith, Noah A. and Zhang, Chiyuan},
  journal       = {arXiv preprint arXiv:2407.06460},
  year          = {2024},
  eprint        = {2407.06460},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2407.06460}
}
"""
