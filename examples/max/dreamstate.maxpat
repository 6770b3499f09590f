{
 "patcher": {
  "fileversion": 1,
  "appversion": {
   "major": 8,
   "minor": 5,
   "revision": 0,
   "architecture": "x64",
   "modernui": 1
  },
  "classnamespace": "box",
  "rect": [
   100.0,
   100.0,
   800.0,
   660.0
  ],
  "boxes": [
   {
    "box": {
     "id": "obj-title",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      20,
      10,
      520,
      22.0
     ],
     "text": "dreamstate control and telemetry (OSC); see docs/touchdesigner.md and docs/osc.md"
    }
   },
   {
    "box": {
     "id": "obj-send",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      20,
      420,
      160,
      22.0
     ],
     "text": "udpsend 127.0.0.1 9000"
    }
   },
   {
    "box": {
     "id": "obj-scene-calm",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      20,
      50,
      140,
      22.0
     ],
     "text": "/dreamstate/scene calm"
    }
   },
   {
    "box": {
     "id": "obj-scene-focused",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      170,
      50,
      140,
      22.0
     ],
     "text": "/dreamstate/scene focused"
    }
   },
   {
    "box": {
     "id": "obj-scene-neutral",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      320,
      50,
      140,
      22.0
     ],
     "text": "/dreamstate/scene neutral"
    }
   },
   {
    "box": {
     "id": "obj-scene-free",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      470,
      50,
      140,
      22.0
     ],
     "text": "/dreamstate/scene"
    }
   },
   {
    "box": {
     "id": "obj-pause",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      20,
      90,
      140,
      22.0
     ],
     "text": "/dreamstate/pause"
    }
   },
   {
    "box": {
     "id": "obj-play",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      170,
      90,
      140,
      22.0
     ],
     "text": "/dreamstate/play"
    }
   },
   {
    "box": {
     "id": "obj-black",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      320,
      90,
      140,
      22.0
     ],
     "text": "/dreamstate/blackout 1"
    }
   },
   {
    "box": {
     "id": "obj-unblack",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      470,
      90,
      140,
      22.0
     ],
     "text": "/dreamstate/blackout 0"
    }
   },
   {
    "box": {
     "id": "obj-zoom-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      20,
      140,
      140,
      22.0
     ],
     "text": "/dreamstate/zoom"
    }
   },
   {
    "box": {
     "id": "obj-zoom-num",
     "maxclass": "flonum",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      20,
      166,
      60,
      22.0
     ],
     "minimum": 0.95,
     "maximum": 1.05,
     "parameter_enable": 0
    }
   },
   {
    "box": {
     "id": "obj-zoom-prep",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 1,
     "patching_rect": [
      20,
      196,
      140,
      22.0
     ],
     "text": "prepend /dreamstate/zoom"
    }
   },
   {
    "box": {
     "id": "obj-rotate-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      170,
      140,
      140,
      22.0
     ],
     "text": "/dreamstate/rotate"
    }
   },
   {
    "box": {
     "id": "obj-rotate-num",
     "maxclass": "flonum",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      170,
      166,
      60,
      22.0
     ],
     "minimum": -5.0,
     "maximum": 5.0,
     "parameter_enable": 0
    }
   },
   {
    "box": {
     "id": "obj-rotate-prep",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 1,
     "patching_rect": [
      170,
      196,
      140,
      22.0
     ],
     "text": "prepend /dreamstate/rotate"
    }
   },
   {
    "box": {
     "id": "obj-step-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      320,
      140,
      140,
      22.0
     ],
     "text": "/dreamstate/step"
    }
   },
   {
    "box": {
     "id": "obj-step-num",
     "maxclass": "flonum",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      320,
      166,
      60,
      22.0
     ],
     "minimum": 0.1,
     "maximum": 6.0,
     "parameter_enable": 0
    }
   },
   {
    "box": {
     "id": "obj-step-prep",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 1,
     "patching_rect": [
      320,
      196,
      140,
      22.0
     ],
     "text": "prepend /dreamstate/step"
    }
   },
   {
    "box": {
     "id": "obj-octaves-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      470,
      140,
      140,
      22.0
     ],
     "text": "/dreamstate/octaves"
    }
   },
   {
    "box": {
     "id": "obj-octaves-num",
     "maxclass": "number",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      470,
      166,
      60,
      22.0
     ],
     "minimum": 1,
     "maximum": 6,
     "parameter_enable": 0
    }
   },
   {
    "box": {
     "id": "obj-octaves-prep",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 1,
     "patching_rect": [
      470,
      196,
      140,
      22.0
     ],
     "text": "prepend /dreamstate/octaves"
    }
   },
   {
    "box": {
     "id": "obj-layer-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      620,
      140,
      140,
      22.0
     ],
     "text": "/dreamstate/layer/block4"
    }
   },
   {
    "box": {
     "id": "obj-layer-num",
     "maxclass": "flonum",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      620,
      166,
      60,
      22.0
     ],
     "minimum": 0.0,
     "maximum": 2.0,
     "parameter_enable": 0
    }
   },
   {
    "box": {
     "id": "obj-layer-prep",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 1,
     "patching_rect": [
      620,
      196,
      140,
      22.0
     ],
     "text": "prepend /dreamstate/layer/block4"
    }
   },
   {
    "box": {
     "id": "obj-recv",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 1,
     "patching_rect": [
      20,
      480,
      120,
      22.0
     ],
     "text": "udpreceive 7000"
    }
   },
   {
    "box": {
     "id": "obj-route",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 5,
     "patching_rect": [
      20,
      510,
      560,
      22.0
     ],
     "text": "route /dreamstate/state /dreamstate/eeg/attention /dreamstate/eeg/meditation /dreamstate/eeg/signal"
    }
   },
   {
    "box": {
     "id": "obj-unpack",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 3,
     "patching_rect": [
      20,
      540,
      120,
      22.0
     ],
     "text": "unpack i s f"
    }
   },
   {
    "box": {
     "id": "obj-state",
     "maxclass": "message",
     "numinlets": 2,
     "numoutlets": 1,
     "patching_rect": [
      160,
      570,
      120,
      22.0
     ],
     "text": ""
    }
   },
   {
    "box": {
     "id": "obj-state-set",
     "maxclass": "newobj",
     "numinlets": 1,
     "numoutlets": 1,
     "patching_rect": [
      160,
      540,
      100,
      22.0
     ],
     "text": "prepend set"
    }
   },
   {
    "box": {
     "id": "obj-attention-show",
     "maxclass": "flonum",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      300,
      570,
      70,
      22.0
     ]
    }
   },
   {
    "box": {
     "id": "obj-attention-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      300,
      600,
      80,
      22.0
     ],
     "text": "attention"
    }
   },
   {
    "box": {
     "id": "obj-meditation-show",
     "maxclass": "flonum",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      390,
      570,
      70,
      22.0
     ]
    }
   },
   {
    "box": {
     "id": "obj-meditation-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      390,
      600,
      80,
      22.0
     ],
     "text": "meditation"
    }
   },
   {
    "box": {
     "id": "obj-signal-show",
     "maxclass": "flonum",
     "numinlets": 1,
     "numoutlets": 2,
     "patching_rect": [
      480,
      570,
      70,
      22.0
     ]
    }
   },
   {
    "box": {
     "id": "obj-signal-label",
     "maxclass": "comment",
     "numinlets": 1,
     "numoutlets": 0,
     "patching_rect": [
      480,
      600,
      80,
      22.0
     ],
     "text": "signal"
    }
   }
  ],
  "lines": [
   {
    "patchline": {
     "source": [
      "obj-scene-calm",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-scene-focused",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-scene-neutral",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-scene-free",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-pause",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-play",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-black",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-unblack",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-zoom-num",
      0
     ],
     "destination": [
      "obj-zoom-prep",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-zoom-prep",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-rotate-num",
      0
     ],
     "destination": [
      "obj-rotate-prep",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-rotate-prep",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-step-num",
      0
     ],
     "destination": [
      "obj-step-prep",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-step-prep",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-octaves-num",
      0
     ],
     "destination": [
      "obj-octaves-prep",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-octaves-prep",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-layer-num",
      0
     ],
     "destination": [
      "obj-layer-prep",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-layer-prep",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-recv",
      0
     ],
     "destination": [
      "obj-route",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      0
     ],
     "destination": [
      "obj-unpack",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-unpack",
      1
     ],
     "destination": [
      "obj-state-set",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-state-set",
      0
     ],
     "destination": [
      "obj-state",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      1
     ],
     "destination": [
      "obj-attention-show",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      2
     ],
     "destination": [
      "obj-meditation-show",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      3
     ],
     "destination": [
      "obj-signal-show",
      0
     ]
    }
   }
  ]
 }
}
