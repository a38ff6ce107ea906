"""The families of all living primate genera, so a labels file with Latin names needs no taxonomy file.

The arrangement follows the ASM Mammal Diversity Database's classification of the order Primates (16
families; marmosets and tamarins in Callitrichidae, night monkeys in Aotidae), typed in for this package.
A few genera that other authorities keep (Oreonax, Callibella) are listed under the family that those
authorities give them, so older Latin names resolve too.
"""

from __future__ import annotations

FAMILY_GENERA: dict[str, tuple[str, ...]] = {
    # Strepsirrhini: lemurs, lorises and galagos
    "Cheirogaleidae": ("Allocebus", "Cheirogaleus", "Microcebus", "Mirza", "Phaner"),
    "Daubentoniidae": ("Daubentonia",),
    "Indriidae": ("Avahi", "Indri", "Propithecus"),
    "Lemuridae": ("Eulemur", "Hapalemur", "Lemur", "Prolemur", "Varecia"),
    "Lepilemuridae": ("Lepilemur",),
    "Galagidae": ("Euoticus", "Galago", "Galagoides", "Otolemur", "Paragalago", "Sciurocheirus"),
    "Lorisidae": ("Arctocebus", "Loris", "Nycticebus", "Perodicticus", "Xanthonycticebus"),
    # Haplorhini: tarsiers, New World monkeys, Old World monkeys and apes
    "Tarsiidae": ("Carlito", "Cephalopachus", "Tarsius"),
    "Aotidae": ("Aotus",),
    "Atelidae": ("Alouatta", "Ateles", "Brachyteles", "Lagothrix", "Oreonax"),
    "Callitrichidae": ("Callibella", "Callimico", "Callithrix", "Cebuella", "Leontocebus", "Leontopithecus",
                       "Mico", "Saguinus"),
    "Cebidae": ("Cebus", "Saimiri", "Sapajus"),
    "Pitheciidae": ("Cacajao", "Callicebus", "Cheracebus", "Chiropotes", "Pithecia", "Plecturocebus"),
    "Cercopithecidae": ("Allenopithecus", "Allochrocebus", "Cercocebus", "Cercopithecus", "Chlorocebus",
                        "Colobus", "Erythrocebus", "Lophocebus", "Macaca", "Mandrillus", "Miopithecus",
                        "Nasalis", "Papio", "Piliocolobus", "Presbytis", "Procolobus", "Pygathrix",
                        "Rhinopithecus", "Rungwecebus", "Semnopithecus", "Simias", "Theropithecus",
                        "Trachypithecus"),
    "Hylobatidae": ("Hoolock", "Hylobates", "Nomascus", "Symphalangus"),
    "Hominidae": ("Gorilla", "Homo", "Pan", "Pongo"),
}

PRIMATE_FAMILY: dict[str, str] = {
    genus: family for family, genera in FAMILY_GENERA.items() for genus in genera
}
