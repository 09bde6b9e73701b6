// Reference: llama2.c run.c tokenizer (build_tokenizer, decode, str_lookup, encode), verbatim algorithm.
// Usage: ref tok.bin < inputs (one hex-encoded input per line) -> JSON lines.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
typedef struct { char *str; int id; } TokenIndex;
typedef struct {
  char** vocab; float* vocab_scores; TokenIndex *sorted_vocab; int vocab_size;
  unsigned int max_token_length; unsigned char byte_pieces[512];
} Tokenizer;
int compare_tokens(const void *a, const void *b) { return strcmp(((TokenIndex*)a)->str, ((TokenIndex*)b)->str); }
void build_tokenizer(Tokenizer* t, char* path, int vocab_size) {
  t->vocab_size = vocab_size;
  t->vocab = (char**)malloc(vocab_size * sizeof(char*));
  t->vocab_scores = (float*)malloc(vocab_size * sizeof(float));
  t->sorted_vocab = NULL;
  for (int i = 0; i < 256; i++) { t->byte_pieces[i * 2] = (unsigned char)i; t->byte_pieces[i * 2 + 1] = '\0'; }
  FILE *file = fopen(path, "rb");
  if (!file) { fprintf(stderr, "couldn't load %s\n", path); exit(1); }
  if (fread(&t->max_token_length, sizeof(int), 1, file) != 1) { exit(1); }
  int len;
  for (int i = 0; i < vocab_size; i++) {
    if (fread(t->vocab_scores + i, sizeof(float), 1, file) != 1) { exit(1); }
    if (fread(&len, sizeof(int), 1, file) != 1) { exit(1); }
    t->vocab[i] = (char *)malloc(len + 1);
    if (fread(t->vocab[i], len, 1, file) != 1) { exit(1); }
    t->vocab[i][len] = '\0';
  }
  fclose(file);
}
char* decode(Tokenizer* t, int prev_token, int token) {
  char *piece = t->vocab[token];
  if (prev_token == 1 && piece[0] == ' ') { piece++; }
  unsigned char byte_val;
  if (sscanf(piece, "<0x%02hhX>", &byte_val) == 1) { piece = (char*)t->byte_pieces + byte_val * 2; }
  return piece;
}
int str_lookup(char *str, TokenIndex *sorted_vocab, int vocab_size) {
  TokenIndex tok = { .str = str };
  TokenIndex *res = bsearch(&tok, sorted_vocab, vocab_size, sizeof(TokenIndex), compare_tokens);
  return res != NULL ? res->id : -1;
}
void encode(Tokenizer* t, char *text, int8_t bos, int8_t eos, int *tokens, int *n_tokens) {
  if (t->sorted_vocab == NULL) {
    t->sorted_vocab = malloc(t->vocab_size * sizeof(TokenIndex));
    for (int i = 0; i < t->vocab_size; i++) { t->sorted_vocab[i].str = t->vocab[i]; t->sorted_vocab[i].id = i; }
    qsort(t->sorted_vocab, t->vocab_size, sizeof(TokenIndex), compare_tokens);
  }
  char* str_buffer = malloc((t->max_token_length*2 +1 +2) * sizeof(char));
  size_t str_len = 0;
  *n_tokens = 0;
  if (bos) tokens[(*n_tokens)++] = 1;
  if (text[0] != '\0') {
    int dummy_prefix = str_lookup(" ", t->sorted_vocab, t->vocab_size);
    tokens[(*n_tokens)++] = dummy_prefix;
  }
  for (char *c = text; *c != '\0'; c++) {
    if ((*c & 0xC0) != 0x80) { str_len = 0; }
    str_buffer[str_len++] = *c;
    str_buffer[str_len] = '\0';
    if ((*(c+1) & 0xC0) == 0x80 && str_len < 4) { continue; }
    int id = str_lookup(str_buffer, t->sorted_vocab, t->vocab_size);
    if (id != -1) { tokens[(*n_tokens)++] = id; }
    else { for (int i=0; i < str_len; i++) { tokens[(*n_tokens)++] = (unsigned char)str_buffer[i] + 3; } }
    str_len = 0;
  }
  while (1) {
    float best_score = -1e10; int best_id = -1; int best_idx = -1;
    for (int i=0; i < (*n_tokens-1); i++) {
      sprintf(str_buffer, "%s%s", t->vocab[tokens[i]], t->vocab[tokens[i+1]]);
      int id = str_lookup(str_buffer, t->sorted_vocab, t->vocab_size);
      if (id != -1 && t->vocab_scores[id] > best_score) { best_score = t->vocab_scores[id]; best_id = id; best_idx = i; }
    }
    if (best_idx == -1) { break; }
    tokens[best_idx] = best_id;
    for (int i = best_idx+1; i < (*n_tokens-1); i++) { tokens[i] = tokens[i+1]; }
    (*n_tokens)--;
  }
  if (eos) tokens[(*n_tokens)++] = 2;
  free(str_buffer);
}
static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }
int main(int argc, char** argv) {
  Tokenizer t; build_tokenizer(&t, argv[1], 512);
  static char line[1 << 16]; static char text[1 << 15]; static int tokens[1 << 15];
  while (fgets(line, sizeof(line), stdin)) {
    size_t n = strcspn(line, "\n"); line[n] = 0;
    size_t m = n / 2;
    for (size_t i = 0; i < m; i++) text[i] = (char)(hexval(line[2*i]) * 16 + hexval(line[2*i+1]));
    text[m] = 0;
    int n_tokens;
    // encode with BOS (as run.c's generate does), no EOS
    encode(&t, text, 1, 0, tokens, &n_tokens);
    printf("{\"hex\": \"%s\", \"ids\": [", line);
    for (int i = 0; i < n_tokens; i++) printf(i ? ", %d" : "%d", tokens[i]);
    printf("], \"decoded_hex\": \"");
    // decode as run.c's generate prints: pieces after the first token, each with its predecessor
    for (int i = 1; i < n_tokens; i++) {
      char* p = decode(&t, tokens[i-1], tokens[i]);
      for (char* q = p; *q; q++) printf("%02x", (unsigned char)*q);
    }
    printf("\"}\n");
  }
  return 0;
}
