/* A program built against an installed librnn (scripts/install.sh), as a C
   user would: pkg-config for the flags, the installed header and library. */
#include <librnn.h>
#include <stdio.h>

int main(void) {
    if (rnn_abi_version() != RNN_ABI_VERSION) {
        fprintf(stderr, "ABI %u, header %u\n", rnn_abi_version(), (unsigned)RNN_ABI_VERSION);
        return 1;
    }
    rnn_config cfg = rnn_config_default();
    cfg.cell = RNN_CELL_GRU;
    cfg.input_size = 2;
    cfg.hidden_size = 3;
    rnn_model *model = NULL;
    if (rnn_model_create(&cfg, &model) != RNN_OK || rnn_model_init_random(model, 1) != RNN_OK) {
        fprintf(stderr, "%s\n", rnn_last_error_message());
        return 1;
    }
    float x[4] = {0.5f, -0.5f, 1.0f, 0.25f}, y[6], h_n[3];
    rnn_input in = {x, 4, 2, 1, NULL, 0, NULL, 0, NULL, 0};
    rnn_output out = {y, 6, h_n, 3, NULL, 0};
    if (rnn_forward_inference(model, &in, &out) != RNN_OK) {
        fprintf(stderr, "%s\n", rnn_last_error_message());
        return 1;
    }
    printf("installed librnn %s: h_n = %.4f %.4f %.4f\n", rnn_version(), h_n[0], h_n[1], h_n[2]);
    rnn_model_destroy(model);
    return 0;
}
