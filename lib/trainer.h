/* Internals of subsae_trainer. The trainer is layered, each file's
 * functions declared in its own header, and no file calls up:
 *
 *   trainer.c             subsae_trainer_fit and subsae_trainer_step: one
 *                         fit loop for one process and for workers; a
 *                         step composed of the stages below
 *   trainer_init.c        subsae_trainer_init
 *   trainer_step.c        forward/backward, update, accounting (trainer_step.h)
 *   trainer_collective.c  the workers' exchange and hashes (trainer_collective.h)
 *   activation.c          the step's encoder per activation (activation.h)
 *   losses.c              the per-feature backward of the extra losses (losses.h)
 *   trainer_state.c       the object: options, state, metrics (trainer_state.h)
 *   trainer_options.c     the option table (options.h)
 *   trainer_workspace.c   the step's buffers (trainer_workspace.h)
 *   trainer_types.h       struct subsae_trainer, the workspace, the window
 *
 * This header gathers them for checkpoint.c and the tests. */
#ifndef SUBSAE_TRAINER_H
#define SUBSAE_TRAINER_H

#include "activation.h"
#include "losses.h"
#include "trainer_collective.h"
#include "trainer_state.h"
#include "trainer_step.h"
#include "trainer_types.h"
#include "trainer_workspace.h"

#endif
